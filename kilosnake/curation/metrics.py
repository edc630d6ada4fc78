"""Per-unit quality metrics written to ``cluster_metrics.tsv`` (formulas in docs/metrics.md).

For a unit with ``N`` kept spikes at times ``t`` (s) in a recording of ``D`` seconds:

* ``firing_rate_hz = N / D``;
* ``amplitude``: mean over spikes of ``a_s × P``, with ``a_s`` the spike's template scaling
  (``amplitudes.npy``) and ``P`` the peak-to-peak of the un-whitened template (template
  ``@ inv(whitening)``) on its largest channel — raw ADC units, times ``uv_per_bit`` for µV;
* ``snr = median(a_s) × max_t |T[t, c*]|``: the template's peak on its best channel ``c*`` in
  whitened units, where the noise SD of every channel is 1 by construction of the whitening;
* ``rp_contamination``: from the number ``r`` of spike pairs closer than the refractory period
  ``τ_R`` (minus a censored period ``τ_C``, ``τ = τ_R - τ_C``), assuming the contaminating spikes
  are an independent Poisson process: ``r = (N² τ / D) (1 - (1 - c)²)``, hence
  ``c = 1 - sqrt(1 - r D / (N² τ))``, clipped to [0, 1] (1 when the square root's argument is
  negative);
* ``presence_ratio``: fraction of equal time bins (60 s, or ``D / 10`` for recordings shorter
  than 600 s) holding at least one spike.

The export adds ``label_reason`` (:func:`kilosnake.curation.cutoff.label_reason`): why the unit
is good or mua.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

#: refractory period for the contamination estimate (s)
REFRACTORY_S = 1.5e-3
#: censored period (s): spikes closer than this cannot both be detected
CENSORED_S = 0.0
#: presence-ratio bin (s) for long recordings
PRESENCE_BIN_S = 60.0
#: minimum number of presence-ratio bins
MIN_PRESENCE_BINS = 10

METRIC_COLUMNS = (
    "n_spikes",
    "firing_rate_hz",
    "amplitude",
    "snr",
    "rp_contamination",
    "presence_ratio",
)
#: text columns after the metrics, when the rows have them: why the unit is good or mua
TEXT_COLUMNS = ("label_reason",)


def firing_rate(n_spikes: int, duration_s: float) -> float:
    """Spikes per second."""
    return n_spikes / duration_s if duration_s > 0 else float("nan")


def refractory_pairs(times_s: np.ndarray, window_s: float) -> int:
    """Number of spike pairs ``i < j`` with ``t_j - t_i < window_s`` (times sorted)."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < 2 or window_s <= 0:
        return 0
    later = np.searchsorted(t, t + window_s, side="left")
    return int((later - np.arange(t.size) - 1).clip(min=0).sum())


def rp_contamination(
    times_s: np.ndarray,
    duration_s: float,
    refractory_s: float = REFRACTORY_S,
    censored_s: float = CENSORED_S,
) -> float:
    """Contamination fraction from refractory-period violations, in [0, 1].

    Parameters
    ----------
    times_s : ndarray
        Spike times (s), sorted.
    duration_s : float
        Recording duration (s).
    refractory_s, censored_s : float
        Refractory and censored periods (s).

    Returns
    -------
    float
        ``1 - sqrt(1 - r D / (N² τ))`` clipped to [0, 1]; NaN for fewer than 2 spikes.
    """
    n = len(times_s)
    tau = refractory_s - censored_s
    if n < 2 or duration_s <= 0 or tau <= 0:
        return float("nan")
    t = np.asarray(times_s, dtype=np.float64)
    r = refractory_pairs(t, refractory_s) - refractory_pairs(t, censored_s)
    x = 1.0 - r * duration_s / (n * n * tau)
    return 1.0 if x <= 0 else float(np.clip(1.0 - math.sqrt(x), 0.0, 1.0))


def presence_bins(duration_s: float) -> int:
    """Number of presence-ratio bins for a recording of ``duration_s``."""
    return max(MIN_PRESENCE_BINS, int(duration_s // PRESENCE_BIN_S))


def presence_ratio(times_s: np.ndarray, duration_s: float) -> float:
    """Fraction of equal time bins that hold at least one spike."""
    if duration_s <= 0:
        return float("nan")
    n_bins = presence_bins(duration_s)
    idx = np.clip(
        (np.asarray(times_s, dtype=np.float64) / duration_s * n_bins).astype(np.int64),
        0,
        n_bins - 1,
    )
    return float(np.unique(idx).size / n_bins)


def peak_to_peak_unwhitened(templates: np.ndarray, whitening_inv: np.ndarray) -> np.ndarray:
    """Peak-to-peak (raw units) of each un-whitened template on its largest channel.

    Parameters
    ----------
    templates : ndarray (n, nt0, Nchan)
        Whitened unit-norm templates.
    whitening_inv : ndarray (Nchan, Nchan)

    Returns
    -------
    ndarray (n,)
    """
    if templates.shape[0] == 0:
        return np.zeros(0)
    unw = np.asarray(templates, dtype=np.float64) @ whitening_inv
    return (unw.max(axis=1) - unw.min(axis=1)).max(axis=1)


def peak_whitened(templates: np.ndarray) -> np.ndarray:
    """Largest absolute value of each whitened template (its best channel's peak)."""
    if templates.shape[0] == 0:
        return np.zeros(0)
    return np.abs(np.asarray(templates, dtype=np.float64)).max(axis=(1, 2))


def unit_metrics(
    times_s,
    amplitudes,
    ptp_raw,
    peak_wh,
    duration_s,
    uv_per_bit=None,
    refractory_s=REFRACTORY_S,
    censored_s=CENSORED_S,
) -> dict:
    """The metrics of one unit (see the module docstring)."""
    a = np.asarray(amplitudes, dtype=np.float64)
    n = int(a.size)
    scale = uv_per_bit if uv_per_bit else 1.0
    return {
        "n_spikes": n,
        "firing_rate_hz": firing_rate(n, duration_s),
        "amplitude": float(a.mean() * ptp_raw * scale) if n else float("nan"),
        "snr": float(np.median(a) * peak_wh) if n else float("nan"),
        "rp_contamination": rp_contamination(times_s, duration_s, refractory_s, censored_s),
        "presence_ratio": presence_ratio(times_s, duration_s) if n else 0.0,
    }


def cluster_metrics(
    times_s,
    labels,
    amplitudes,
    templates,
    whitening_inv,
    duration_s,
    uv_per_bit=None,
    refractory_s=REFRACTORY_S,
    censored_s=CENSORED_S,
) -> dict:
    """Metrics of every cluster that has spikes.

    Parameters
    ----------
    times_s : ndarray (n,)
        Kept spike times (s), sorted.
    labels : ndarray (n,)
        Cluster of each kept spike.
    amplitudes : ndarray (n,)
        Template scaling of each kept spike.
    templates : ndarray (n_clusters, nt0, Nchan)
        Whitened unit-norm templates indexed by cluster id.
    whitening_inv : ndarray (Nchan, Nchan)
    duration_s : float
    uv_per_bit : float or None
        µV per raw unit; amplitudes stay in raw units when None.

    Returns
    -------
    dict
        ``{cluster_id: {column: value}}`` for clusters with at least one spike, ids ascending.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ptp = peak_to_peak_unwhitened(templates, whitening_inv)
    peak = peak_whitened(templates)
    order = np.argsort(labels, kind="stable")
    ids, starts = np.unique(labels[order], return_index=True)
    bounds = np.append(starts, labels.size)
    out = {}
    for k, c in enumerate(ids):
        idx = order[bounds[k] : bounds[k + 1]]
        out[int(c)] = unit_metrics(
            times_s[idx],
            amplitudes[idx],
            ptp[c],
            peak[c],
            duration_s,
            uv_per_bit,
            refractory_s,
            censored_s,
        )
    return out


def amplitude_column_name(uv_per_bit) -> str:
    """``amplitude_uv`` when the µV scale is known, else ``amplitude_raw``."""
    return "amplitude_uv" if uv_per_bit else "amplitude_raw"


def format_metrics_tsv(metrics: dict, uv_per_bit=None) -> str:
    """The text of ``cluster_metrics.tsv`` (tab separated, one row per cluster)."""
    names = METRIC_COLUMNS + tuple(
        c for c in TEXT_COLUMNS if any(c in row for row in metrics.values())
    )
    columns = [amplitude_column_name(uv_per_bit) if c == "amplitude" else c for c in names]
    lines = ["\t".join(("cluster_id",) + tuple(columns))]
    for c, row in metrics.items():
        lines.append("\t".join([str(c)] + [_fmt(row.get(k, "")) for k in names]))
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, str):
        return " ".join(v.split())  # one line, no tabs
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "nan" if not np.isfinite(v) else f"{v:.6g}"
