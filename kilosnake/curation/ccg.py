"""Refractoriness statistics of cross- and auto-correlograms (merges, splits and cutoff).

Two spike trains are compared through the histogram ``K`` of all pairwise time differences
``t2 - t1`` in bins of ``tbin`` (1 ms), for lags up to ``nbins`` bins (500) on either side; bin
``k`` (centred index, ``-nbins..nbins``) holds the differences ``d`` with
``k - 1/2 <= d / tbin < k + 1/2``. With ``N1, N2`` spikes and ``T`` the span of both trains, two
independent Poisson trains give ``E = tbin * N1 * N2 / T`` pairs per bin. From ``K``:

* far shoulders ``I1`` = centred bins ``[-499, -250) ∪ [250, 500)``, near shoulders
  ``I2 = [-50, -10)`` and ``I3 = [11, 50)``;
* ``Q00 = ΣK[I1] / (|I1| E)``, ``Q01 = max(ΣK[I2] / (|I2| E), ΣK[I3] / (|I3| E))``;
* ``R00 = max(mean K[I2], mean K[I3], mean K[I1])`` (pairs per bin on the shoulders);
* with the centre bin left out, for ``i = 1..10`` over the bins ``[-i, i]``:
  ``Qi = ΣK / (2 i E)`` and, with ``n = ΣK / 2`` and ``λ = R00 i``,
  ``Ri = (1 + erf((n - λ) / sqrt(2 λ))) / 2`` (Gaussian approximation of the Poisson probability of
  seeing at most ``n`` pairs);
* ``Q = min_i Qi / max(Q00, Q01)`` (about the fraction of refractory violations relative to the
  shoulders, i.e. a contamination estimate) and ``R = min_i Ri`` (how significant the dip is; small
  means a real refractory period).

Computation
-----------
Only sums of ``K`` over ranges of bins are needed, and a range sum is a difference of the
cumulative pair count ``C(e) = #{(i, j): t2[j] - t1[i] < e}``, which is
``Σ_i searchsorted(t2, t1[i] + e)``. About twenty such counts give every statistic, in
``O(N1 log N2)`` per count, without listing the pairs of the whole window (a 100 Hz unit has
~10⁸ pairs within ±0.5 s over an hour). Only the counts at the ends of the wide gaps between
edges are searched that way; those at the closely spaced central edges follow from the few pairs
within about ±10 ms, listed (:func:`cumulative_pair_counts`). Undetermined cases (an empty
train, a zero time span, no pairs on the shoulders) give ``Q = 1`` and ``R = 1``: no evidence of
a refractory period.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

#: bin width of the correlogram (s)
TBIN_S = 1e-3
#: bins on each side of the centre
NBINS = 500
#: far shoulders, in centred bins: [start, stop) ranges
FAR_SHOULDERS = ((-499, -250), (250, 500))
#: near shoulders before and after the centre
NEAR_BEFORE = (-50, -10)
NEAR_AFTER = (11, 50)
#: largest half-width (bins) of the central windows
N_CENTRAL = 10
#: spikes of the first train handled per vectorised step
CHUNK = 1 << 18
#: up to this many keys (spikes times lags), every lag is searched in one vectorised call
DIRECT_KEYS = 1 << 14
#: approximate costs (ns, NumPy 2 on x86-64) of searching one spike at one lag, of listing one
#: pair of spikes and of testing one listed pair at one lag
SEARCH_NS = 25.0
PAIR_NS = 30.0
PAIR_LAG_NS = 0.6
#: pairs listed at once when counting the lags between two anchors
PAIR_BLOCK = 1 << 20


class RefractoryStats(NamedTuple):
    """Refractoriness of a pair of spike trains (see the module docstring)."""

    Q: float
    R: float


UNDETERMINED = RefractoryStats(1.0, 1.0)


def bin_samples(sample_rate: float, tbin_s: float = TBIN_S) -> float:
    """Width of one correlogram bin in samples (may be fractional)."""
    return float(sample_rate) * tbin_s


def cumulative_pair_counts(t1: np.ndarray, t2: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Number of pairs ``(i, j)`` with ``t2[j] - t1[i] < lag``, for every lag.

    Exactly ``Σ_i searchsorted(t2, t1[i] + lag)`` (side ``left``), for every lag. Short first
    trains are searched for all lags in one vectorised call. Longer ones are searched only at a
    few anchor lags (the ends of the large gaps between lags); the counts at the lags between two
    anchors are those of the lower anchor plus the pairs of the window between the anchors, listed
    when they are few (see :func:`_window_counts`).

    Parameters
    ----------
    t1, t2 : ndarray
        Spike times in samples; ``t2`` must be sorted ascending.
    lags : ndarray of float
        Lags in samples.

    Returns
    -------
    ndarray of int64, same shape as ``lags``
    """
    t1 = np.asarray(t1, dtype=np.float64).ravel()
    t2 = np.asarray(t2, dtype=np.float64)
    lags = np.asarray(lags, dtype=np.float64)
    if t1.size * lags.size <= DIRECT_KEYS or np.isnan(lags).any():
        return _pair_counts_by_search(t1, t2, lags)
    if np.any(t1[1:] < t1[:-1]):
        t1 = np.sort(t1)  # the counts do not depend on the order of t1; sorted keys search faster
    order = np.argsort(lags, axis=None, kind="stable")
    ascending = lags.ravel()[order]
    counts = np.zeros(ascending.size, dtype=np.int64)
    for start in range(0, t1.size, CHUNK):
        counts += _block_pair_counts(t1[start : start + CHUNK], t2, ascending)
    out = np.empty_like(counts)
    out[order] = counts
    return out.reshape(lags.shape)


def _pair_counts_by_search(t1: np.ndarray, t2: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """:func:`cumulative_pair_counts` with one ``searchsorted`` call per block, for all lags."""
    flat = lags.ravel()
    counts = np.zeros(flat.size, dtype=np.int64)
    rows = max(1, CHUNK // max(flat.size, 1))
    for start in range(0, t1.size, rows):
        keys = t1[None, start : start + rows] + flat[:, None]
        counts += np.searchsorted(t2, keys, side="left").sum(axis=1)
    return counts.reshape(lags.shape)


def _positions(t2: np.ndarray, t1: np.ndarray, lag: float) -> np.ndarray:
    """``searchsorted(t2, t1 + lag)``: pairs of each spike of ``t1`` below ``lag``."""
    return np.searchsorted(t2, t1 + lag, side="left")


def _block_pair_counts(t1: np.ndarray, t2: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Cumulative pair counts of a block of ``t1`` at the ascending ``lags``.

    Anchors are searched, starting with the first and last lag. A window of lags between two
    anchors is split at its largest gap when that gap is expected to hold enough pairs to pay
    for one more search; otherwise it is counted from its pairs when listing them costs less
    than searching every lag inside, and split in the middle when not.
    """
    counts = np.zeros(lags.size, dtype=np.int64)
    if lags.size == 0 or t1.size == 0:
        return counts
    last = lags.size - 1
    below = {0: _positions(t2, t1, lags[0]), last: _positions(t2, t1, lags[last])}
    counts[0], counts[last] = below[0].sum(), below[last].sum()
    windows = [(0, last)]
    while windows:
        a, b = windows.pop()
        if b - a < 2:
            continue
        inner, n_pairs = lags[a + 1 : b], int(counts[b] - counts[a])
        at_gap = _gap_split_pays(lags, a, b, n_pairs, t1.size)
        if not at_gap and _listing_pays(n_pairs, t1.size, inner.size):
            counts[a + 1 : b] = counts[a] + _window_counts(t1, t2, below[a], below[b], inner)
            continue
        m = _split_index(lags, a, b, at_gap)
        below[m] = _positions(t2, t1, lags[m])
        counts[m] = below[m].sum()
        windows += [(a, m), (m, b)]
    return counts


def _listing_pays(n_pairs: int, n_keys: int, n_inner: int) -> bool:
    """True when listing ``n_pairs`` pairs to count ``n_inner`` lags beats searching them all."""
    return n_pairs * (PAIR_NS + n_inner * PAIR_LAG_NS) <= n_inner * n_keys * SEARCH_NS


def _gap_split_pays(lags: np.ndarray, a: int, b: int, n_pairs: int, n_keys: int) -> bool:
    """True when one more search, at the largest gap between lags ``a`` and ``b``, is expected to
    cost less than listing the pairs of that gap (pairs spread evenly over the window)."""
    gap = float(np.max(np.diff(lags[a : b + 1])))
    return n_pairs * gap / (lags[b] - lags[a]) * PAIR_NS > n_keys * SEARCH_NS


def _split_index(lags: np.ndarray, a: int, b: int, at_gap: bool) -> int:
    """A lag strictly between ``a`` and ``b``: an end of the largest gap between them, or the
    middle one."""
    if not at_gap:
        return (a + b) // 2
    g = a + int(np.argmax(np.diff(lags[a : b + 1])))  # the gap lags[g] .. lags[g + 1]
    return g + 1 if g == a else g


def _window_counts(t1, t2, below_a, below_b, inner) -> np.ndarray:
    """Pairs with ``t2[j] < t1[i] + lag`` for each of the ``inner`` lags, among the pairs
    ``below_a[i] <= j < below_b[i]`` (those between the two anchor lags), listed about
    ``PAIR_BLOCK`` at a time."""
    width = below_b - below_a
    ends = np.cumsum(width)
    counts = np.zeros(inner.size, dtype=np.int64)
    start = 0
    while start < t1.size:
        stop = max(
            start + 1,
            int(np.searchsorted(ends, ends[start] - width[start] + PAIR_BLOCK, side="right")),
        )
        rows = slice(start, stop)
        counts += _listed_pair_counts(t1[rows], t2, below_a[rows], width[rows], inner)
        start = stop
    return counts


def _listed_pair_counts(t1, t2, first, width, inner) -> np.ndarray:
    """For each of the ``inner`` lags, the pairs ``(i, j)``, ``first[i] <= j < first[i] +
    width[i]``, with ``t2[j] < t1[i] + lag``."""
    n_pairs = int(width.sum())
    if n_pairs == 0:
        return np.zeros(inner.size, dtype=np.int64)
    pair_start = np.cumsum(width) - width
    t2_pair = t2[np.arange(n_pairs) + np.repeat(first - pair_start, width)]
    t1_pair = np.repeat(t1, width)
    return np.array([np.count_nonzero(t2_pair < t1_pair + lag) for lag in inner], dtype=np.int64)


def range_sums(
    t1: np.ndarray, t2: np.ndarray, ranges: Sequence[tuple[int, int]], tbin: float
) -> np.ndarray:
    """``ΣK`` over each ``[start, stop)`` range of centred bins of the correlogram ``t2 - t1``."""
    bounds = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    edges, inverse = np.unique(bounds, return_inverse=True)
    c = cumulative_pair_counts(t1, t2, (edges - 0.5) * tbin)[inverse.reshape(-1, 2)]
    return (c[:, 1] - c[:, 0]).astype(np.float64)


def correlogram(
    t1: np.ndarray, t2: np.ndarray, sample_rate: float, tbin_s: float = TBIN_S, nbins: int = NBINS
) -> np.ndarray:
    """The full correlogram ``K`` of ``t2 - t1`` (``2 nbins + 1`` bins, centre at ``nbins``).

    Parameters
    ----------
    t1, t2 : ndarray
        Spike times in samples (any order).
    sample_rate : float
        Hz.
    tbin_s : float
        Bin width in seconds.
    nbins : int
        Bins on each side of the centre.

    Returns
    -------
    ndarray of int64, shape (2 nbins + 1,)
    """
    tbin = bin_samples(sample_rate, tbin_s)
    edges = (np.arange(-nbins, nbins + 2) - 0.5) * tbin
    return np.diff(cumulative_pair_counts(t1, np.sort(np.asarray(t2)), edges))


def refractory_stats(
    t1: np.ndarray, t2: np.ndarray, sample_rate: float, tbin_s: float = TBIN_S
) -> RefractoryStats:
    """Refractoriness ``Q`` and significance ``R`` of the correlogram of two trains.

    Pass the same train twice for the auto-correlogram (self-pairs fall in the centre bin, which
    is left out).

    Parameters
    ----------
    t1, t2 : ndarray
        Spike times in samples (any order, integer or float).
    sample_rate : float
        Hz.
    tbin_s : float
        Bin width in seconds (1 ms in Kilosort).

    Returns
    -------
    RefractoryStats
        ``Q`` (≈ contamination; small = refractory) and ``R`` (significance; small = significant).
    """
    t1 = np.asarray(t1, dtype=np.float64).ravel()
    t2 = np.sort(np.asarray(t2, dtype=np.float64).ravel())
    if t1.size == 0 or t2.size == 0:
        return UNDETERMINED
    span = max(t1.max(), t2[-1]) - min(t1.min(), t2[0])
    if span <= 0:
        return UNDETERMINED
    tbin = bin_samples(sample_rate, tbin_s)
    expected = tbin * t1.size * t2.size / span
    return stats_from_range_sums(_sums_needed(t1, t2, tbin), expected)


def _central_ranges():
    return [(-i, i + 1) for i in range(1, N_CENTRAL + 1)]


def _sums_needed(t1, t2, tbin) -> dict:
    ranges = [*FAR_SHOULDERS, NEAR_BEFORE, NEAR_AFTER, (0, 1), *_central_ranges()]
    s = range_sums(t1, t2, ranges, tbin)
    return {
        "far": s[0] + s[1],
        "near_before": s[2],
        "near_after": s[3],
        "centre": s[4],
        "central": s[5:] - s[4],
    }


def _width(r) -> int:
    return r[1] - r[0]


def stats_from_range_sums(sums: dict, expected: float) -> RefractoryStats:
    """``Q`` and ``R`` from the range sums of a correlogram and the Poisson pairs per bin."""
    n_far = sum(_width(r) for r in FAR_SHOULDERS)
    n_before, n_after = _width(NEAR_BEFORE), _width(NEAR_AFTER)
    q00 = sums["far"] / (n_far * expected)
    q01 = max(
        sums["near_before"] / (n_before * expected), sums["near_after"] / (n_after * expected)
    )
    r00 = max(sums["near_before"] / n_before, sums["near_after"] / n_after, sums["far"] / n_far)
    half_widths = np.arange(1, N_CENTRAL + 1)
    qi = sums["central"] / (2 * half_widths * expected)
    ri = [_poisson_cdf_gauss(s / 2.0, r00 * i) for s, i in zip(sums["central"], half_widths)]
    baseline = max(q00, q01)
    q = float(qi.min() / baseline) if baseline > 0 else 1.0
    return RefractoryStats(q, float(min(ri)))


def _poisson_cdf_gauss(n: float, lam: float) -> float:
    """Gaussian approximation of P(X <= n) for X ~ Poisson(lam); 1 when lam is 0."""
    if lam <= 0:
        return 1.0
    return 0.5 * (1.0 + math.erf((n - lam) / math.sqrt(2.0 * lam)))


def refractory_stats_many(
    trains: Sequence[np.ndarray], pairs: np.ndarray, sample_rate: float, tbin_s: float = TBIN_S
) -> tuple[np.ndarray, np.ndarray]:
    """``Q`` and ``R`` for many pairs of trains.

    Parameters
    ----------
    trains : sequence of ndarray
        Spike times (samples) of each unit.
    pairs : ndarray of int, shape (n_pairs, 2)
        Indices into ``trains``; a pair ``(a, a)`` gives the auto-correlogram statistics.
    sample_rate : float
        Hz.

    Returns
    -------
    Q, R : ndarray of float64, shape (n_pairs,)
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    sorted_trains = {}
    q = np.ones(len(pairs))
    r = np.ones(len(pairs))
    for k, (a, b) in enumerate(pairs):
        if b not in sorted_trains:
            sorted_trains[b] = np.sort(np.asarray(trains[b], dtype=np.float64))
        q[k], r[k] = refractory_stats(trains[a], sorted_trains[b], sample_rate, tbin_s)
    return q, r


#: time bins of the firing profiles compared by :func:`time_separation`
SEPARATION_BINS = 20


def time_separation(t_a, t_b, n_bins: int = SEPARATION_BINS) -> float:
    """How differently two spike trains spread over time, in [0, 1]: one minus the overlap of
    their normalised histograms over ``n_bins`` equal bins of the span of both (0: the same
    profile; 1: never active at the same time)."""
    t_a, t_b = np.asarray(t_a, np.float64), np.asarray(t_b, np.float64)
    if t_a.size == 0 or t_b.size == 0:
        return 0.0
    lo, hi = min(t_a.min(), t_b.min()), max(t_a.max(), t_b.max())
    if hi <= lo:
        return 0.0
    h_a = np.histogram(t_a, n_bins, (lo, hi))[0] / t_a.size
    h_b = np.histogram(t_b, n_bins, (lo, hi))[0] / t_b.size
    return float(1.0 - np.minimum(h_a, h_b).sum())
