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
  ``traces``              the same 100 ms raw and preprocessed, probe order, sorted spikes
                          circled (the busiest 100 ms of the sorted spikes)
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

import base64
import csv
import dataclasses
import datetime
import html
import json
import logging
import re
from pathlib import Path

import numpy as np

from .parallel import map_ordered
from .streaming import blocks

logger = logging.getLogger(__name__)

#: flagged as flat below this fraction of the median RMS (as the input check warns)
FLAT_FRACTION = 1e-3
#: flagged as noisy above this multiple of the median RMS
NOISY_FACTOR = 3.0
#: flagged as saturated above this fraction of values at the dtype's limits
SATURATED_FRACTION = 0.01
#: length of the trace windows (s)
TRACE_WINDOW_S = 0.1
#: per-unit panels drawn at most (good units by depth)
MAX_UNITS = 100
#: units drawn when no unit is good (the ones with most spikes)
FALLBACK_UNITS = 10
#: channels drawn around a unit's peak channel
WAVEFORM_CHANNELS = 12
#: autocorrelogram bin and half width
ACG_BIN_MS = 1.0
ACG_HALF_BINS = 50
#: warnings and errors quoted from the logs, at most
MAX_LOG_LINES = 60
#: spikes drawn at most in the raster (a random, seeded subset of longer sorts)
RASTER_POINTS = 200_000
#: stages in pipeline order (for the run table)
STAGE_ORDER = ("check_input", "input_report", "whitening", "preprocess", "drift", "detect",
               "learn", "final_pass", "merge", "split", "cutoff", "export_phy", "scorecard")
SECTIONS = ("summary", "input", "traces", "drift", "batches", "units", "unit-panels", "run")


# --------------------------------------------------------------------------------------------
# channels and the raw file


def channel_flags(rms, saturation) -> dict:
    """Flat, noisy and saturated channels.

    Parameters
    ----------
    rms, saturation : array-like (Nchan,)
        Per-channel RMS (any unit) and fraction of saturated values (``input.json``).

    Returns
    -------
    dict of str → bool ndarray (Nchan,)
        ``flat``, ``noisy``, ``saturated``.
    """
    rms = np.asarray(rms, dtype=np.float64)
    sat = np.asarray(saturation, dtype=np.float64)
    med = float(np.median(rms)) if rms.size else 0.0
    return {"flat": rms < FLAT_FRACTION * max(med, 1e-12),
            "noisy": rms > NOISY_FACTOR * med if med > 0 else np.zeros(rms.size, bool),
            "saturated": sat > SATURATED_FRACTION}


def probe_order(kcoords, yc, xc) -> np.ndarray:
    """Channel indices sorted by shank, then depth, then x: the order traces are drawn in."""
    return np.lexsort((np.asarray(xc), np.asarray(yc), np.asarray(kcoords)))


def resolve_raw_path(dat: str, input_json) -> Path | None:
    """The raw file named in ``input.json``: as written, else relative to the workflow folder.

    ``input.json`` keeps the path the workflow was given, often relative to the folder Snakemake
    ran in (the parent of ``results/``).
    """
    p = Path(dat)
    if p.is_file():
        return p
    if not p.is_absolute():
        for parent in Path(input_json).resolve().parents:
            if parent.name == "results" and (parent.parent / p).is_file():
                return parent.parent / p
    return None


def read_raw_window(info: dict, raw_path, start: int, n: int) -> np.ndarray:
    """``n`` raw samples from ``start`` of the probe's channels, median removed, in µV if known.

    Returns
    -------
    ndarray (n, Nchan) float32, channels in probe (``chan_map``) order
    """
    from .recording import RawRecording, RecordingInfo

    rec = RawRecording(RecordingInfo(str(raw_path), info["n_channels_total"], info["dtype"],
                                     info["sample_rate"], info.get("uv_per_bit")))
    start = int(np.clip(start, 0, max(rec.n_samples - n, 0)))
    x = rec.read(start, start + n, np.asarray(info["probe"]["chan_map"])).astype(np.float32)
    x -= np.median(x, axis=0)
    return x * np.float32(info.get("uv_per_bit") or 1.0)


def amplitude_unit(info: dict) -> str:
    """``µV`` when ``uv_per_bit`` is known, else ``raw units``."""
    return "µV" if info.get("uv_per_bit") else "raw units"


@dataclasses.dataclass
class InputView:
    """What the input-check picture shows (channels in ``chan_map`` order)."""

    title: str
    probe_name: str
    xc: np.ndarray
    yc: np.ndarray
    kcoords: np.ndarray
    order: np.ndarray
    rms: np.ndarray
    saturation: np.ndarray
    flags: dict
    amplitude_unit: str
    sample_rate: float
    raw: np.ndarray | None  # (n, Nchan) in probe order (``order`` applied)
    raw_start_s: float
    unused_rows: list
    noisy_factor: float = NOISY_FACTOR
    saturated_fraction: float = SATURATED_FRACTION


def input_view(input_json, start_s: float | None = None,
               window_s: float = TRACE_WINDOW_S) -> InputView:
    """Read what the input check shows from ``input.json`` and the raw file.

    Parameters
    ----------
    input_json : str or Path
    start_s : float, optional
        Start of the raw window (s); the middle of the recording by default.
    window_s : float
        Length of the raw window (s).
    """
    info = json.loads(Path(input_json).read_text())
    probe = info["probe"]
    xc, yc = np.asarray(probe["xc"], float), np.asarray(probe["yc"], float)
    kc = np.asarray(probe["kcoords"], float)
    order = probe_order(kc, yc, xc)
    scale = info.get("uv_per_bit") or 1.0
    rms = np.asarray(info["rms"], float) * scale
    sat = np.asarray(info["saturation_fraction"], float)
    fs = float(info["sample_rate"])
    n = int(round(window_s * fs))
    start = int(round((start_s if start_s is not None else info["duration_s"] / 2) * fs))
    raw_path = resolve_raw_path(info["dat"], input_json)
    raw = None
    if raw_path is not None:
        start = int(np.clip(start, 0, max(info["n_samples"] - n, 0)))
        raw = read_raw_window(info, raw_path, start, n)[:, order]
    else:
        logger.warning("raw file %s not found: the input check shows no traces", info["dat"])
    used = set(int(c) for c in probe["chan_map"])
    unused = [r for r in range(int(info["n_channels_total"])) if r not in used]
    title = (f"{Path(info['dat']).name}: {info['duration_s']:.1f} s at {fs:g} Hz, "
             f"{len(xc)} channels on the probe of {info['n_channels_total']} in the file"
             + (f" (rows not on the probe: {_ranges(unused)})" if unused else ""))
    return InputView(title, str(probe.get("name", "probe")), xc, yc, kc, order, rms, sat,
                     channel_flags(rms, sat), amplitude_unit(info), fs, raw, start / fs, unused)


def _ranges(values) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2, 5"``."""
    out, values = [], sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def write_input_check(input_json, out) -> None:
    """The ``input_report`` stage: ``input.json`` + raw file → ``input_check.png``.

    Parameters
    ----------
    input_json : str or Path
    out : str or Path
        PNG to write (through a temporary file and a rename).
    """
    from .report_figures import input_check_figure, png_bytes

    view = input_view(input_json)
    for name, mask in view.flags.items():
        if mask.any():
            logger.info("%d %s channels: %s", int(mask.sum()), name,
                        _ranges(np.flatnonzero(mask).tolist()))
    _write_bytes(out, png_bytes(input_check_figure(view)))
    logger.info("input check picture written to %s", out)


def _write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# the sort's outputs


@dataclasses.dataclass
class PhyView:
    """The arrays of a Phy folder the report draws from."""

    spike_times: np.ndarray  # (n,) samples
    spike_clusters: np.ndarray  # (n,)
    amplitudes: np.ndarray  # (n,) template scaling
    templates: np.ndarray  # (n_clusters, nt0, Nchan) un-whitened, unit scaling
    positions: np.ndarray  # (Nchan, 2)
    shanks: np.ndarray  # (Nchan,)
    labels: dict  # cluster → KSLabel
    metrics: dict  # cluster → {column: float}
    amplitude_column: str

    def spikes_of(self, cluster: int) -> np.ndarray:
        """Indices of the spikes of ``cluster``, in time order (no per-spike index is kept)."""
        return np.flatnonzero(self.spike_clusters == cluster)

    @property
    def peak_channels(self) -> np.ndarray:
        """The channel with the largest peak-to-peak of every template."""
        ptp = self.templates.max(axis=1) - self.templates.min(axis=1)
        return ptp.argmax(axis=1)

    @property
    def peak_to_peak(self) -> np.ndarray:
        """Peak-to-peak of every un-whitened template on its largest channel."""
        return (self.templates.max(axis=1) - self.templates.min(axis=1)).max(axis=1)


def read_tsv(path) -> list[dict]:
    """Rows of a tab-separated file with a header (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _signed(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` (1-D) as the signed integer ``dtype``: the same memory when it is the unsigned
    type of that size (Phy's uint64 times, uint32 ids), else a converted copy."""
    values = values.ravel()
    dtype = np.dtype(dtype)
    if values.dtype.kind == "u" and values.dtype.itemsize == dtype.itemsize:
        return values.view(dtype)
    return values.astype(dtype, copy=False)


def read_phy(phy_dir) -> PhyView:
    """Read the Phy folder written by the ``export_phy`` stage."""
    d = Path(phy_dir)
    templates = np.load(d / "templates.npy").astype(np.float32)
    winv = np.load(d / "whitening_mat_inv.npy").astype(np.float32)
    positions = np.load(d / "channel_positions.npy").astype(np.float64)
    shanks_file = d / "channel_shanks.npy"
    shanks = np.load(shanks_file) if shanks_file.is_file() else np.zeros(positions.shape[0])
    rows = read_tsv(d / "cluster_metrics.tsv")
    amp_col = next((c for c in (rows[0] if rows else {}) if c.startswith("amplitude")),
                   "amplitude_uv")
    metrics = {int(r["cluster_id"]): {k: _number(v) for k, v in r.items() if k != "cluster_id"}
               for r in rows}
    labels = {int(r["cluster_id"]): r["KSLabel"] for r in read_tsv(d / "cluster_KSLabel.tsv")}
    return PhyView(_signed(np.load(d / "spike_times.npy"), np.int64),
                   _signed(np.load(d / "spike_clusters.npy"), np.int32),
                   np.load(d / "amplitudes.npy").ravel().astype(np.float64, copy=False),
                   templates @ winv, positions, np.asarray(shanks).ravel(), labels, metrics,
                   amp_col)


def unit_rows(phy: PhyView) -> list[dict]:
    """One row per unit with spikes: its metrics, label, peak channel and depth.

    Good units come first, then by depth (deepest, i.e. smallest y, last).
    """
    peaks = phy.peak_channels
    rows = []
    for c, m in phy.metrics.items():
        peak = int(peaks[c]) if c < peaks.size else 0
        rows.append({"id": c, "label": phy.labels.get(c, "?"), "peak_channel": peak,
                     "depth": float(phy.positions[peak, 1]), **m})
    return sorted(rows, key=lambda r: (r["label"] != "good", -r["depth"], r["id"]))


def busiest_window(times, n_samples: int, n: int) -> int:
    """Start (samples) of the ``n``-sample window, on a grid of ``n``, with most ``times``."""
    n_windows = max(int(n_samples) // max(int(n), 1), 1)
    if len(times) == 0:
        return (n_windows // 2) * n
    counts = np.zeros(n_windows, np.int64)
    for _, block in blocks(np.asarray(times)):  # no whole-length temporary
        counts += np.bincount(np.minimum(block // n, n_windows - 1).astype(np.int64),
                              minlength=n_windows)
    return int(np.argmax(counts)) * n


@dataclasses.dataclass
class UnitView:
    """What the panel of one unit shows."""

    id: int
    label: str
    title: str
    waveform: np.ndarray  # (nt0, Nchan) in ``amplitude_unit``
    positions: np.ndarray
    channels: np.ndarray
    peak_channel: int
    acg: np.ndarray
    acg_bin_ms: float
    refractory_ms: float
    times_s: np.ndarray
    amplitudes: np.ndarray  # in ``amplitude_unit``
    duration_s: float
    sample_rate: float
    amplitude_unit: str


def nearest_channels(positions, shanks, peak: int, n: int = WAVEFORM_CHANNELS) -> np.ndarray:
    """The ``n`` channels closest to ``peak`` on its shank (``peak`` included)."""
    d = np.hypot(*(positions - positions[peak]).T)
    d = np.where(shanks == shanks[peak], d, np.inf)
    return np.argsort(d, kind="stable")[:min(n, int(np.isfinite(d).sum()))]


def unit_view(phy: PhyView, row: dict, sample_rate: float, duration_s: float,
              scale: float, unit: str) -> UnitView:
    """The panel data of the unit of ``row`` (from :func:`unit_rows`)."""
    from .curation.ccg import correlogram
    from .curation.metrics import REFRACTORY_S

    c = row["id"]
    sel = phy.spikes_of(c)
    t = phy.spike_times[sel]
    a = phy.amplitudes[sel]
    ptp = float(phy.peak_to_peak[c])
    acg = correlogram(t, t, sample_rate, ACG_BIN_MS / 1e3, ACG_HALF_BINS).astype(np.float64)
    acg[ACG_HALF_BINS] -= t.size  # each spike paired with itself
    waveform = phy.templates[c] * float(a.mean() if a.size else 0.0) * scale
    title = (f"unit {c} ({row['label']}): {t.size} spikes, "
             f"{row.get('firing_rate_hz', float('nan')):.2f} Hz, "
             f"amplitude {row.get(phy.amplitude_column, float('nan')):.0f} {unit}, "
             f"SNR {row.get('snr', float('nan')):.1f}, "
             f"contamination {100 * row.get('rp_contamination', float('nan')):.0f}%, "
             f"channel {row['peak_channel']} at {row['depth']:.0f} µm")
    return UnitView(c, row["label"], title, waveform, phy.positions,
                    nearest_channels(phy.positions, phy.shanks, row["peak_channel"]),
                    row["peak_channel"], acg, ACG_BIN_MS, REFRACTORY_S * 1e3,
                    t / sample_rate, a * ptp * scale, duration_s,
                    sample_rate, unit)


def units_to_draw(rows: list[dict], max_units: int) -> tuple[list[dict], str]:
    """The units that get a panel, and a note on the ones left out."""
    good = [r for r in rows if r["label"] == "good"]
    if not good:
        chosen = sorted(rows, key=lambda r: -r.get("n_spikes", 0))[:min(max_units,
                                                                       FALLBACK_UNITS)]
        return chosen, (f"No unit is labelled good; the {len(chosen)} units with most spikes "
                        "are shown.")
    note = f"All {len(good)} good units, by depth."
    if len(good) > max_units:
        note = (f"The first {max_units} of {len(good)} good units by depth; "
                f"{len(good) - max_units} more are in the table and in Phy.")
    n_other = len(rows) - len(good)
    if n_other:
        note += f" The {n_other} other units are in the table only."
    return good[:max_units], note


# --------------------------------------------------------------------------------------------
# HTML


@dataclasses.dataclass
class Section:
    """One section of the report page."""

    id: str
    title: str
    body: str


def img_tag(png: bytes, alt: str, element_id: str | None = None) -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    ident = f' id="{html.escape(element_id)}"' if element_id else ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list], classes: list[str] | None = None,
               table_class: str = "") -> str:
    """A plain HTML table; cells are escaped unless they are :class:`RawHtml`."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{c if isinstance(c, RawHtml) else html.escape(str(c))}</td>"
                        for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    cls = f' class="{table_class}"' if table_class else ""
    return (f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table>")


class RawHtml(str):
    """A table cell that is already HTML."""


def fmt(value, spec: str = ".3g") -> str:
    """A number for a table (``—`` for nan)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if not np.isfinite(v) else format(v, spec)


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
header { background: #243447; color: white; padding: 14px 24px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; color: #cfd8e3; font-size: 13px; }
nav { background: #e8edf2; padding: 8px 24px; font-size: 14px; position: sticky; top: 0; }
nav a { margin-right: 14px; color: #243447; text-decoration: none; }
main { padding: 0 24px 40px; max-width: 1500px; }
section { background: white; border: 1px solid #dde3ea; border-radius: 6px; margin: 18px 0;
          padding: 6px 18px 16px; }
h2 { font-size: 18px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #dde3ea; padding: 3px 8px; text-align: right; }
th { background: #f0f3f6; }
td:first-child, th:first-child { text-align: left; }
table.facts td { text-align: left; }
table.facts thead { display: none; }
tr.good td { background: #eef7ee; }
tr.warn td { background: #fff4e5; }
pre { background: #f6f8fa; padding: 8px; font-size: 12px; overflow-x: auto; }
figure { margin: 10px 0 18px; border-top: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
.note { color: #555; font-size: 13px; }
.label-good { color: #1b7837; font-weight: bold; }
"""


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page: header, a link bar, the sections."""
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")


# --------------------------------------------------------------------------------------------
# the sections


@dataclasses.dataclass
class ReportInputs:
    """Paths the report reads; all but ``input_json`` and ``phy`` may be missing."""

    input_json: Path
    phy: Path
    preprocessed: Path | None = None
    spikes: Path | None = None
    drift: Path | None = None
    drift_plot: Path | None = None
    input_check: Path | None = None
    scorecard: Path | None = None
    run_dir: Path | None = None


def _open_group(path):
    if path is None or not Path(path).exists():
        return None
    from .store import open_store

    return open_store(path)


def summary_section(info: dict, phy: PhyView, rows: list[dict], spikes_group,
                    scorecard, params: dict | None = None) -> Section:
    """Key facts of the recording and the sort, and the scorecard when there is one."""
    from . import __version__
    from .params import non_default

    probe = info["probe"]
    n_good = sum(r["label"] == "good" for r in rows)
    attrs = dict(spikes_group.attrs) if spikes_group is not None else {}
    n_found = attrs.get("n_spikes", "—")
    changed = non_default(params if params is not None else attrs.get("params", {}))
    facts = [
        ("raw file", info["dat"]),
        ("duration", f"{info['duration_s']:.1f} s ({info['n_samples']} samples at "
                     f"{info['sample_rate']:g} Hz)"),
        ("channels", f"{len(probe['chan_map'])} on the probe "
                     f"({len(set(probe['kcoords']))} shank(s)), "
                     f"{info['n_channels_total']} in the file, {info['dtype']}"),
        ("probe", probe.get("name", "")),
        ("batches", f"{info['n_batches']} of {info['NT']} samples"),
        ("spikes", f"{n_found} found by the final pass, {phy.spike_times.size} kept"),
        ("units", f"{len(rows)} with spikes, {n_good} good"),
        ("device", attrs.get("device", "—")),
        ("non-default parameters", ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items()))
         or "none"),
        ("kilosnake", attrs.get("kilosnake_version", __version__)),
    ]
    body = html_table(["", ""], [[k, v] for k, v in facts], table_class="facts")
    if scorecard is not None and Path(scorecard).is_file():
        body += ("<h3>Ground-truth scorecard</h3><pre>"
                 f"{html.escape(Path(scorecard).read_text())}</pre>")
    return Section("summary", "Summary", body)


def input_section(paths: ReportInputs) -> Section:
    """The input-check picture (drawn now if the file is not there)."""
    from .report_figures import input_check_figure, png_bytes

    if paths.input_check is not None and Path(paths.input_check).is_file():
        png = Path(paths.input_check).read_bytes()
    else:
        png = png_bytes(input_check_figure(input_view(paths.input_json)))
    view_note = ("Probe coloured by shank; flat, noisy and saturated channels marked "
                 f"(RMS below {FLAT_FRACTION:g}× or above {NOISY_FACTOR:g}× the median, "
                 f"more than {100 * SATURATED_FRACTION:g}% of values at the limits). "
                 "RMS and saturation come from the input check (input.json).")
    return Section("input", "Input and channels",
                   f'<p class="note">{view_note}</p>' + img_tag(png, "input check"))


def traces_section(info: dict, paths: ReportInputs, phy: PhyView, rows: list[dict]) -> Section:
    """The busiest 100 ms of the sort, raw and preprocessed, sorted spikes circled."""
    from .preprocess import PreprocessedReader
    from .report_figures import png_bytes, traces_figure

    fs = float(info["sample_rate"])
    n = int(round(TRACE_WINDOW_S * fs))
    probe = info["probe"]
    order = probe_order(probe["kcoords"], probe["yc"], probe["xc"])
    start = busiest_window(phy.spike_times, info["n_samples"], n)
    raw_path = resolve_raw_path(info["dat"], paths.input_json)
    raw = None if raw_path is None else read_raw_window(info, raw_path, start, n)[:, order]
    if paths.preprocessed is None or not Path(paths.preprocessed).exists():
        return Section("traces", "Traces", '<p class="note">No preprocessed traces.</p>')
    pre = PreprocessedReader(paths.preprocessed).read(start, start + n)[:, order]
    row_of = np.empty(order.size, np.int64)
    row_of[order] = np.arange(order.size)
    peak = {r["id"]: r["peak_channel"] for r in rows}
    good = {r["id"] for r in rows if r["label"] == "good"}
    sel = (phy.spike_times >= start) & (phy.spike_times < start + n)
    cl = phy.spike_clusters[sel]
    spikes = (phy.spike_times[sel] / fs, row_of[[peak.get(int(c), 0) for c in cl]],
              np.array([int(c) in good for c in cl], bool))
    fig = traces_figure(raw, pre, fs, start / fs, amplitude_unit(info), spikes)
    note = (f"{TRACE_WINDOW_S * 1e3:.0f} ms from {start / fs:.2f} s (the window with most "
            f"sorted spikes: {int(sel.sum())}), channels in probe order (shank, depth). "
            "Circles mark sorted spikes at their unit's peak channel (green: good).")
    return Section("traces", "Traces",
                   f'<p class="note">{note}</p>' + img_tag(png_bytes(fig), "traces"))


def drift_section(paths: ReportInputs) -> Section:
    """The drift stage's picture and whether the correction was applied."""
    g = _open_group(paths.drift)
    parts = []
    if g is not None:
        attrs = g.attrs
        if attrs.get("enabled", True):
            dshift = np.asarray(g["dshift"][...])
            parts.append(f"Drift correction on ({attrs.get('nblocks', '?')} blocks): "
                         f"displacement {dshift.min():.1f} to {dshift.max():.1f} µm.")
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
    from .report_figures import batches_figure, png_bytes

    NT = int(spikes_group.attrs.get("NT", info["NT"])) if spikes_group is not None \
        else int(info["NT"])
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
    note = (f"{nb} batches; median {np.median(found):.0f} spikes per batch."
            + (f" Batches with no spikes: {_ranges(empty.tolist())}." if empty.size else ""))
    return Section("batches", "Spikes over time",
                   f'<p class="note">{html.escape(note)}</p>' + img_tag(png_bytes(fig),
                                                                          "spikes per batch"))


def units_section(phy: PhyView, rows: list[dict], drawn: set, unit: str) -> Section:
    """The unit table (linked to the panels)."""
    header = ["unit", "label", "spikes", "rate (Hz)", f"amplitude ({unit})", "SNR",
              "contamination (%)", "presence ratio", "peak channel", "depth (µm)"]
    table, classes = [], []
    for r in rows:
        ident = RawHtml(f'<a href="#unit-{r["id"]}">{r["id"]}</a>') if r["id"] in drawn \
            else r["id"]
        label = RawHtml(f'<span class="label-good">{r["label"]}</span>') \
            if r["label"] == "good" else r["label"]
        table.append([ident, label, fmt(r.get("n_spikes"), ".0f"),
                      fmt(r.get("firing_rate_hz"), ".2f"),
                      fmt(r.get(phy.amplitude_column), ".0f"), fmt(r.get("snr"), ".1f"),
                      fmt(100 * r.get("rp_contamination", float("nan")), ".1f"),
                      fmt(r.get("presence_ratio"), ".2f"), r["peak_channel"],
                      fmt(r["depth"], ".0f")])
        classes.append("good" if r["label"] == "good" else "")
    n_good = sum(r["label"] == "good" for r in rows)
    note = (f"{len(rows)} units with spikes, {n_good} good (phy/cluster_metrics.tsv, "
            "cluster_KSLabel.tsv). Contamination from refractory-period violations; "
            "see docs/metrics.md.")
    return Section("units", "Units", f'<p class="note">{note}</p>'
                   + html_table(header, table, classes))


def unit_panel_png(view: UnitView) -> bytes:
    """The PNG of one unit's panel."""
    from .report_figures import png_bytes, unit_figure

    return png_bytes(unit_figure(view))


def render_unit_panels(views: list[UnitView], workers: int = 1) -> list[bytes]:
    """PNGs of the unit panels, drawn by ``workers`` processes (same bytes in the same order
    whatever the number)."""
    return map_ordered(unit_panel_png, views, workers)


def unit_panels_section(phy: PhyView, chosen: list[dict], note: str, info: dict,
                        workers: int = 1) -> Section:
    """One picture per chosen unit."""
    fs, dur = float(info["sample_rate"]), float(info["duration_s"])
    scale, unit = info.get("uv_per_bit") or 1.0, amplitude_unit(info)
    views = [unit_view(phy, r, fs, dur, scale, unit) for r in chosen]
    figures = [f'<figure id="unit-{r["id"]}">' + img_tag(png, view.title) + "</figure>"
               for r, view, png in zip(chosen, views, render_unit_panels(views, workers))]
    return Section("unit-panels", "Unit panels",
                   f'<p class="note">{html.escape(note)}</p>' + "".join(figures))


_DONE_LINE = re.compile(r"done in ([\d.]+) s(?: \(CPU ([\d.]+) s\))?, peak host memory "
                        r"(\d+) MB(?:, (?:peak )?GPU pool (\d+) MB)?")
_BACKEND_LINE = re.compile(r"kilosnake\.backend: backend: (.*)$")


def stage_table(run_dir: Path) -> list[list]:
    """Per stage: wall and CPU time, peak host and GPU memory, backend (from the logs).

    The report's own log is left out: it is still being written.
    """
    logs = {p.stem: p for p in (run_dir / "logs").glob("*.log") if p.stem != "report"} \
        if run_dir else {}
    names = [s for s in STAGE_ORDER if s in logs] + sorted(set(logs) - set(STAGE_ORDER))
    rows = []
    for name in names:
        text = logs[name].read_text(errors="replace")
        done = _DONE_LINE.findall(text)
        backend = [m.group(1) for m in map(_BACKEND_LINE.search, text.splitlines()) if m]
        wall, cpu, rss, gpu = done[-1] if done else ("", "", "", "")
        rows.append([name, wall or "—", cpu or "—", rss or "—", gpu or "—",
                     backend[-1] if backend else "—"])
    return rows


def log_problems(run_dir: Path) -> list[str]:
    """The WARNING and ERROR lines of every stage's log, prefixed with the stage."""
    lines = []
    for p in sorted((run_dir / "logs").glob("*.log")) if run_dir else ():
        for line in p.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line:
                lines.append(f"[{p.stem}] {line}")
    return lines


def run_section(run_dir: Path | None) -> Section:
    """How the stages ran: time, memory, backend, and what they warned about."""
    rows = stage_table(run_dir) if run_dir else []
    body = html_table(["stage", "wall (s)", "CPU (s)", "peak host memory (MB)",
                       "peak GPU pool (MB)", "backend"], rows) if rows else \
        '<p class="note">No stage logs found.</p>'
    problems = log_problems(run_dir) if run_dir else []
    if problems:
        shown = problems[:MAX_LOG_LINES]
        more = len(problems) - len(shown)
        body += ("<h3>Warnings and errors in the logs</h3><pre>"
                 + html.escape("\n".join(shown))
                 + (f"\n... and {more} more (see logs/)" if more else "") + "</pre>")
    else:
        body += '<p class="note">No warnings or errors in the logs.</p>'
    return Section("run", "Run", body)


# --------------------------------------------------------------------------------------------
# the stage


def build_report(paths: ReportInputs, max_units: int = MAX_UNITS,
                 params: dict | None = None, workers: int = 1) -> str:
    """The report page of one recording, as HTML text.

    Parameters
    ----------
    paths : ReportInputs
    max_units : int
        Per-unit panels drawn at most.
    params : dict, optional
        The run's resolved parameters (the non-default ones are listed); those of
        ``spikes.zarr`` when not given.
    workers : int
        Processes drawing the unit panels.

    Returns
    -------
    str
    """
    info = json.loads(Path(paths.input_json).read_text())
    phy = read_phy(paths.phy)
    rows = unit_rows(phy)
    spikes_group = _open_group(paths.spikes)
    chosen, note = units_to_draw(rows, max_units)
    unit = amplitude_unit(info)
    sections = [
        summary_section(info, phy, rows, spikes_group, paths.scorecard, params),
        input_section(paths),
        traces_section(info, paths, phy, rows),
        drift_section(paths),
        batches_section(info, phy, rows, spikes_group),
        units_section(phy, rows, {r["id"] for r in chosen}, unit),
        unit_panels_section(phy, chosen, note, info, workers),
        run_section(paths.run_dir),
    ]
    name = Path(paths.run_dir).name if paths.run_dir else Path(info["dat"]).stem
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    subtitle = (f"{info['dat']} · {info['duration_s']:.1f} s · "
                f"{sum(r['label'] == 'good' for r in rows)} good of {len(rows)} units · "
                f"generated {stamp}")
    return render_html(f"kilosnake report: {name}", subtitle, sections)


def write_report(out, input_json, phy, preprocessed=None, spikes=None, drift=None,
                 drift_plot=None, input_check=None, scorecard=None, run_dir=None,
                 max_units: int = MAX_UNITS, params: dict | None = None,
                 workers: int = 1) -> None:
    """The ``report`` stage: the sort's outputs → ``report.html`` (see the module docstring).

    Parameters
    ----------
    out : str or Path
        HTML file to write (through a temporary file and a rename).
    input_json, phy : str or Path
        ``input.json`` and the Phy folder.
    preprocessed, spikes, drift, drift_plot, input_check, scorecard : str or Path, optional
        The other outputs drawn from; a section says so when one is missing.
    run_dir : str or Path, optional
        The recording's results folder (for ``logs/``); the folder of ``out`` by default.
    max_units : int
        Per-unit panels drawn at most.
    params : dict, optional
        The run's resolved parameters, for the summary's non-default list.
    workers : int
        Processes drawing the unit panels (the rule's threads).
    """
    out = Path(out)
    paths = ReportInputs(*(None if p is None else Path(p) for p in (
        input_json, phy, preprocessed, spikes, drift, drift_plot, input_check, scorecard,
        run_dir if run_dir is not None else out.parent)))
    text = build_report(paths, max_units, params, workers)
    _write_bytes(out, text.encode("utf-8"))
    logger.info("report written to %s (%.1f MB)", out, len(text) / 1e6)
