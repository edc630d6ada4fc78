"""What a user looks at after (and before) a sort: the input check and the QC report.

Two stages live here:

* ``input_report`` (:func:`write_input_check`) → ``results/{recording}/input_check.png``, from
  ``input.json`` and the raw file only, so it is ready seconds after the input check and long
  before the sort: the probe layout coloured by shank with flat, noisy and saturated channels
  marked, the per-channel RMS and saturation, and 100 ms of raw traces in probe order.
* ``report`` (:func:`write_report`) → ``results/{recording}/report.html``: one self-contained
  HTML page (pictures embedded as base64 PNG, no external files, no scripts) with the sections

  ======================  ==============================================================
  ``summary``             recording, probe, batches, spikes and units, version, device,
                          non-default parameters, the ground-truth scorecard when there is one
  ``input``               the input-check picture
  ``traces``              the same 100 ms raw and preprocessed, probe order, the final
                          pass's spikes circled (the ``traces_plot`` stage's picture,
                          drawn beside curation: :mod:`kilosnake.report.traces`)
  ``drift``               the drift stage's picture (displacement; spike depths before and
                          after correction) and whether the correction was on
  ``batches``             spikes per batch found by the final pass and kept after curation
                          (an empty batch is marked), sorted spikes at their unit's depth
  ``units``               one row per unit with spikes: label, firing rate, amplitude,
                          contamination, SNR, presence ratio, peak channel and depth
  ``unit-panels``         per unit: template on its nearest channels, autocorrelogram,
                          amplitude over time; good units by depth, at most ``max_units``
                          (a note says how many were left out)
  ``run``                 per stage: wall and CPU time, peak host and GPU memory, backend;
                          the warnings and errors of every stage's log
  ======================  ==============================================================

Channel flags (the same thresholds as the input check's warnings): *flat* when the RMS is
below ``FLAT_FRACTION`` × the median RMS, *noisy* when above ``NOISY_FACTOR`` × the median,
*saturated* when more than ``SATURATED_FRACTION`` of the sampled values sit at the dtype's
limits. Raw-file rows that are not on the probe (a sync channel, for instance) are listed.

Units: amplitudes are in µV when ``uv_per_bit`` is known (else raw units), computed like
``cluster_metrics.tsv`` (:mod:`kilosnake.curation.metrics`): a spike's amplitude is its template
scaling times the peak-to-peak of the un-whitened template on its largest channel; the template
drawn is the un-whitened template times the unit's mean scaling.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
from pathlib import Path

import numpy as np

from kilosnake.io.input_json import probe_from_input_json, read_input_json
from kilosnake.io.phy import PhyView, read_phy
from kilosnake.io.store import open_store
from kilosnake.io.streaming import blocks
from kilosnake.params import non_default
from kilosnake.report.figures import batches_figure, input_check_figure, png_bytes
from kilosnake.report.html import RawHtml, Section, fmt, html_table, img_tag, render_html
from kilosnake.report.input_check import (
    FLAT_FRACTION,
    NOISY_FACTOR,
    SATURATED_FRACTION,
    TRACE_WINDOW_S,
    _ranges,
    _write_bytes,
    amplitude_unit,
    input_view,
)
from kilosnake.report.run_log import run_section
from kilosnake.report.units import (
    MAX_UNITS,
    render_unit_panels,
    unit_rows,
    unit_view,
    units_to_draw,
)
from kilosnake.version import __version__

logger = logging.getLogger(__name__)


#: spikes drawn at most in the raster (a random, seeded subset of longer sorts)
RASTER_POINTS = 200_000
SECTIONS = ("summary", "input", "traces", "drift", "batches", "units", "unit-panels", "run")


# --------------------------------------------------------------------------------------------
# the sections


@dataclasses.dataclass
class ReportInputs:
    """Paths the report reads; all but ``input_json`` and ``phy`` may be missing."""

    input_json: Path
    phy: Path
    traces_plot: Path | None = None
    spikes: Path | None = None
    drift: Path | None = None
    drift_plot: Path | None = None
    input_check: Path | None = None
    scorecard: Path | None = None
    run_dir: Path | None = None


def _open_group(path):
    if path is None or not Path(path).exists():
        return None

    return open_store(path)


def summary_section(
    info: dict, phy: PhyView, rows: list[dict], spikes_group, scorecard, params: dict | None = None
) -> Section:
    """Key facts of the recording and the sort, and the scorecard when there is one."""

    probe = probe_from_input_json(info)
    n_good = sum(r["label"] == "good" for r in rows)
    attrs = dict(spikes_group.attrs) if spikes_group is not None else {}
    n_found = attrs.get("n_spikes", "—")
    changed = non_default(params if params is not None else attrs.get("params", {}))
    facts = [
        ("raw file", info["dat"]),
        (
            "duration",
            f"{info['duration_s']:.1f} s ({info['n_samples']} samples at "
            f"{info['sample_rate']:g} Hz)",
        ),
        (
            "channels",
            f"{probe.n_channels} on the probe "
            f"({probe.shank_ids().size} shank(s)), "
            f"{info['n_channels_total']} in the file, {info['dtype']}",
        ),
        ("probe", probe.name),
        ("batches", f"{info['n_batches']} of {info['NT']} samples"),
        ("spikes", f"{n_found} found by the final pass, {phy.spike_times.size} kept"),
        ("units", f"{len(rows)} with spikes, {n_good} good"),
        ("device", attrs.get("device", "—")),
        (
            "non-default parameters",
            ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())) or "none",
        ),
        ("kilosnake", attrs.get("kilosnake_version", __version__)),
    ]
    body = html_table(["", ""], [[k, v] for k, v in facts], table_class="facts")
    if scorecard is not None and Path(scorecard).is_file():
        body += (
            f"<h3>Ground-truth scorecard</h3><pre>{html.escape(Path(scorecard).read_text())}</pre>"
        )
    return Section("summary", "Summary", body)


def input_section(paths: ReportInputs) -> Section:
    """The input-check picture (drawn now if the file is not there)."""

    if paths.input_check is not None and Path(paths.input_check).is_file():
        png = Path(paths.input_check).read_bytes()
    else:
        png = png_bytes(input_check_figure(input_view(paths.input_json)))
    view_note = (
        "Probe coloured by shank; flat, noisy and saturated channels marked "
        f"(RMS below {FLAT_FRACTION:g}× or above {NOISY_FACTOR:g}× the median, "
        f"more than {100 * SATURATED_FRACTION:g}% of values at the limits). "
        "RMS and saturation come from the input check (input.json)."
    )
    return Section(
        "input",
        "Input and channels",
        f'<p class="note">{view_note}</p>' + img_tag(png, "input check"),
    )


def traces_section(paths: ReportInputs) -> Section:
    """The traces picture of the ``traces_plot`` stage (:mod:`kilosnake.report.traces`)."""
    if paths.traces_plot is None or not Path(paths.traces_plot).is_file():
        return Section("traces", "Traces", '<p class="note">No traces picture.</p>')
    note = (
        f"{TRACE_WINDOW_S * 1e3:.0f} ms of the recording, raw (median removed) and preprocessed "
        "(filtered, whitened), channels in probe order (shank, depth): the window with most "
        "spikes found by the final pass. Circles mark those spikes at their template's peak "
        "channel, before curation."
    )
    return Section(
        "traces",
        "Traces",
        f'<p class="note">{note}</p>' + img_tag(Path(paths.traces_plot).read_bytes(), "traces"),
    )


def drift_section(paths: ReportInputs) -> Section:
    """The drift stage's picture and whether the correction was applied."""
    g = _open_group(paths.drift)
    parts = []
    if g is not None:
        attrs = g.attrs
        if attrs.get("enabled", True):
            dshift = np.asarray(g["dshift"][...])
            parts.append(
                f"Drift correction on ({attrs.get('nblocks', '?')} blocks): "
                f"displacement {dshift.min():.1f} to {dshift.max():.1f} µm."
            )
        else:
            parts.append(f"Drift correction off: {attrs.get('reason', '')}.")
    body = "".join(f'<p class="note">{html.escape(p)}</p>' for p in parts)
    if paths.drift_plot is not None and Path(paths.drift_plot).is_file():
        body += img_tag(Path(paths.drift_plot).read_bytes(), "drift")
    else:
        body += '<p class="note">No drift picture.</p>'
    return Section("drift", "Drift", body)


def raster_spikes(n: int, max_points: int = RASTER_POINTS):
    """The spikes the raster draws: all, or ``max_points`` of them drawn at random (seeded)."""
    if n <= max_points:
        return slice(None)
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def batches_section(info: dict, phy: PhyView, rows: list[dict], spikes_group) -> Section:
    """Spikes per batch (a hole shows as an empty, marked batch) and the sorted raster."""

    NT = (
        int(spikes_group.attrs.get("NT", info["NT"]))
        if spikes_group is not None
        else int(info["NT"])
    )
    nb = -(-int(info["n_samples"]) // NT)
    kept = np.zeros(nb, np.int64)
    for _, block in blocks(phy.spike_times):
        kept += np.bincount(block // NT, minlength=nb)[:nb]
    found = kept
    if spikes_group is not None and "batch" in spikes_group:
        found = np.zeros(nb, np.int64)
        for _, b in blocks(spikes_group["batch"]):
            found += np.bincount(b.astype(np.int64), minlength=nb)[:nb]
    depth = np.zeros(phy.templates.shape[0])
    good = np.zeros(phy.templates.shape[0], bool)
    for r in rows:
        depth[r["id"]], good[r["id"]] = r["depth"], r["label"] == "good"
    fs = float(info["sample_rate"])
    drawn = raster_spikes(phy.spike_times.size)
    times, clusters = phy.spike_times[drawn], phy.spike_clusters[drawn]
    raster = (times / fs, depth[clusters], good[clusters], float(info["duration_s"]))
    fig = batches_figure(found, kept, NT / fs, raster)
    empty = np.flatnonzero(found == 0)
    note = f"{nb} batches; median {np.median(found):.0f} spikes per batch." + (
        f" Batches with no spikes: {_ranges(empty.tolist())}." if empty.size else ""
    )
    return Section(
        "batches",
        "Spikes over time",
        f'<p class="note">{html.escape(note)}</p>' + img_tag(png_bytes(fig), "spikes per batch"),
    )


def units_section(phy: PhyView, rows: list[dict], drawn: set, unit: str) -> Section:
    """The unit table (linked to the panels)."""
    header = [
        "unit",
        "label",
        "why",
        "spikes",
        "rate (Hz)",
        f"amplitude ({unit})",
        "SNR",
        "contamination (%)",
        "presence ratio",
        "peak channel",
        "depth (µm)",
    ]
    table, classes = [], []
    for r in rows:
        ident = RawHtml(f'<a href="#unit-{r["id"]}">{r["id"]}</a>') if r["id"] in drawn else r["id"]
        label = (
            RawHtml(f'<span class="label-good">{r["label"]}</span>')
            if r["label"] == "good"
            else r["label"]
        )
        table.append(
            [
                ident,
                label,
                r.get("label_reason", ""),
                fmt(r.get("n_spikes"), ".0f"),
                fmt(r.get("firing_rate_hz"), ".2f"),
                fmt(r.get(phy.amplitude_column), ".0f"),
                fmt(r.get("snr"), ".1f"),
                fmt(100 * r.get("rp_contamination", float("nan")), ".1f"),
                fmt(r.get("presence_ratio"), ".2f"),
                r["peak_channel"],
                fmt(r["depth"], ".0f"),
            ]
        )
        classes.append("good" if r["label"] == "good" else "")
    n_good = sum(r["label"] == "good" for r in rows)
    n_noise = sum(r["label"] == "noise" for r in rows)
    note = (
        f"{len(rows)} clusters with spikes, {n_good} good, {n_noise} noise "
        '(phy/cluster_metrics.tsv, cluster_KSLabel.tsv); "why" is the reason of the label '
        "(label_reason): a unit is mua when its auto-correlogram shows no significant "
        "refractory dip (too few spikes for the test, contamination above cutoff_fcont, or a "
        "dip not significant at cutoff_R_max in a short recording) or its template spreads too "
        "far (good_max_spread_um); a cluster is noise when it has fewer than min_unit_spikes "
        "spikes and no unit similar enough to fold it into. Contamination from "
        "refractory-period violations; see docs/metrics.md."
    )
    return Section(
        "units", "Units", f'<p class="note">{note}</p>' + html_table(header, table, classes)
    )


def unit_panels_section(phy: PhyView, chosen: list[dict], note: str, info: dict) -> Section:
    """One picture per chosen unit."""
    fs, dur = float(info["sample_rate"]), float(info["duration_s"])
    scale, unit = info.get("uv_per_bit") or 1.0, amplitude_unit(info)
    views = [unit_view(phy, r, fs, dur, scale, unit) for r in chosen]
    figures = [
        f'<figure id="unit-{r["id"]}">{svg}</figure>'
        for r, svg in zip(chosen, render_unit_panels(views))
    ]
    return Section(
        "unit-panels", "Unit panels", f'<p class="note">{html.escape(note)}</p>' + "".join(figures)
    )


# --------------------------------------------------------------------------------------------
# the stage


def build_report(
    paths: ReportInputs, max_units: int = MAX_UNITS, params: dict | None = None
) -> str:
    """The report page of one recording, as HTML text.

    Parameters
    ----------
    paths : ReportInputs
    max_units : int
        Per-unit panels drawn at most.
    params : dict, optional
        The run's resolved parameters (the non-default ones are listed); those of
        ``spikes.zarr`` when not given.

    Returns
    -------
    str
    """
    info = read_input_json(paths.input_json)
    phy = read_phy(paths.phy)
    rows = unit_rows(phy)
    spikes_group = _open_group(paths.spikes)
    chosen, note = units_to_draw(rows, max_units)
    unit = amplitude_unit(info)
    sections = [
        summary_section(info, phy, rows, spikes_group, paths.scorecard, params),
        input_section(paths),
        traces_section(paths),
        drift_section(paths),
        batches_section(info, phy, rows, spikes_group),
        units_section(phy, rows, {r["id"] for r in chosen}, unit),
        unit_panels_section(phy, chosen, note, info),
        run_section(paths.run_dir),
    ]
    name = Path(paths.run_dir).name if paths.run_dir else Path(info["dat"]).stem
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    subtitle = (
        f"{info['dat']} · {info['duration_s']:.1f} s · "
        f"{sum(r['label'] == 'good' for r in rows)} good of {len(rows)} units · "
        f"generated {stamp}"
    )
    return render_html(f"kilosnake report: {name}", subtitle, sections)


def write_report(
    out,
    input_json,
    phy,
    traces_plot=None,
    spikes=None,
    drift=None,
    drift_plot=None,
    input_check=None,
    scorecard=None,
    run_dir=None,
    max_units: int = MAX_UNITS,
    params: dict | None = None,
) -> None:
    """The ``report`` stage: the sort's outputs → ``report.html`` (see the module docstring).

    Parameters
    ----------
    out : str or Path
        HTML file to write (through a temporary file and a rename).
    input_json, phy : str or Path
        ``input.json`` and the Phy folder.
    traces_plot, spikes, drift, drift_plot, input_check, scorecard : str or Path, optional
        The other outputs shown; a section says so when one is missing.
    run_dir : str or Path, optional
        The recording's results folder (for ``logs/``); the folder of ``out`` by default.
    max_units : int
        Per-unit panels drawn at most.
    params : dict, optional
        The run's resolved parameters, for the summary's non-default list.
    """
    out = Path(out)
    paths = ReportInputs(
        *(
            None if p is None else Path(p)
            for p in (
                input_json,
                phy,
                traces_plot,
                spikes,
                drift,
                drift_plot,
                input_check,
                scorecard,
                run_dir if run_dir is not None else out.parent,
            )
        )
    )
    text = build_report(paths, max_units, params)
    _write_bytes(out, text.encode("utf-8"))
    logger.info("report written to %s (%.1f MB)", out, len(text) / 1e6)
