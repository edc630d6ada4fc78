"""The report's units: the table rows, which units are drawn, and each drawn unit's panel."""

from __future__ import annotations

import dataclasses

import numpy as np

from kilosnake.curation.ccg import correlogram
from kilosnake.curation.metrics import REFRACTORY_S
from kilosnake.io.phy import PhyView
from kilosnake.io.streaming import blocks
from kilosnake.report.svg import unit_panel_svg

#: per-unit panels drawn at most (good units first, then by depth)
MAX_UNITS = 100
#: channels drawn around a unit's peak channel
WAVEFORM_CHANNELS = 12
#: autocorrelogram bin and half width
ACG_BIN_MS = 1.0
ACG_HALF_BINS = 50


def unit_rows(phy: PhyView) -> list[dict]:
    """One row per unit with spikes: its metrics, label, peak channel and depth.

    Good units come first, then by depth (deepest, i.e. smallest y, last).
    """
    peaks = phy.peak_channels
    rows = []
    for c, m in phy.metrics.items():
        peak = int(peaks[c]) if c < peaks.size else 0
        rows.append(
            {
                "id": c,
                "label": phy.labels.get(c, "?"),
                "peak_channel": peak,
                "depth": float(phy.positions[peak, 1]),
                **m,
            }
        )
    return sorted(rows, key=lambda r: (r["label"] != "good", -r["depth"], r["id"]))


def busiest_window(times, n_samples: int, n: int) -> int:
    """Start (samples) of the ``n``-sample window, on a grid of ``n``, with most ``times``."""
    n_windows = max(int(n_samples) // max(int(n), 1), 1)
    if len(times) == 0:
        return (n_windows // 2) * n
    counts = np.zeros(n_windows, np.int64)
    for _, block in blocks(np.asarray(times)):  # no whole-length temporary
        counts += np.bincount(
            np.minimum(block // n, n_windows - 1).astype(np.int64), minlength=n_windows
        )
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
    return np.argsort(d, kind="stable")[: min(n, int(np.isfinite(d).sum()))]


def unit_view(
    phy: PhyView, row: dict, sample_rate: float, duration_s: float, scale: float, unit: str
) -> UnitView:
    """The panel data of the unit of ``row`` (from :func:`unit_rows`)."""

    c = row["id"]
    sel = phy.spikes_of(c)
    t = phy.spike_times[sel]
    a = phy.amplitudes[sel]
    ptp = float(phy.peak_to_peak[c])
    acg = correlogram(t, t, sample_rate, ACG_BIN_MS / 1e3, ACG_HALF_BINS).astype(np.float64)
    acg[ACG_HALF_BINS] -= t.size  # each spike paired with itself
    waveform = phy.templates[c] * float(a.mean() if a.size else 0.0) * scale
    title = (
        f"unit {c} ({row['label']}): {t.size} spikes, "
        f"{row.get('firing_rate_hz', float('nan')):.2f} Hz, "
        f"amplitude {row.get(phy.amplitude_column, float('nan')):.0f} {unit}, "
        f"SNR {row.get('snr', float('nan')):.1f}, "
        f"contamination {100 * row.get('rp_contamination', float('nan')):.0f}%, "
        f"channel {row['peak_channel']} at {row['depth']:.0f} µm"
    )
    return UnitView(
        c,
        row["label"],
        title,
        waveform,
        phy.positions,
        nearest_channels(phy.positions, phy.shanks, row["peak_channel"]),
        row["peak_channel"],
        acg,
        ACG_BIN_MS,
        REFRACTORY_S * 1e3,
        t / sample_rate,
        a * ptp * scale,
        duration_s,
        sample_rate,
        unit,
    )


def units_to_draw(rows: list[dict], max_units: int) -> tuple[list[dict], str]:
    """The units that get a panel (every cluster not labelled noise, good ones first, then by
    depth, at most ``max_units``), and a note on the ones left out."""
    units = [r for r in rows if r["label"] != "noise"]
    note = f"All {len(units)} units, good ones first, then by depth."
    if len(units) > max_units:
        note = (
            f"The first {max_units} of {len(units)} units (good ones first, then by depth); "
            f"{len(units) - max_units} more are in the table and in Phy."
        )
    n_noise = len(rows) - len(units)
    if n_noise:
        note += f" The {n_noise} noise clusters are in the table only."
    return units[:max_units], note


def render_unit_panels(views: list[UnitView]) -> list[str]:
    """The unit panels, as inline SVG (:mod:`kilosnake.report.svg`), in the order given."""
    return [unit_panel_svg(view) for view in views]
