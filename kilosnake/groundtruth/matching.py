"""Matching sorted spikes to ground-truth spikes within a tolerance: counts per unit pair,
agreement, best pairs.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


#: default time tolerance of a match (ms)
DEFAULT_TOLERANCE_MS = 0.4
#: sorted spikes matched per stretch of time (bounds the matching's scratch memory)
MATCH_STEP = 1 << 17


# --------------------------------------------------------------------------------------------
# matching


def tolerance_in_samples(tolerance_ms: float, sample_rate: float) -> int:
    """Match tolerance in samples: ``round(tolerance_ms * 1e-3 * sample_rate)``."""
    return int(round(tolerance_ms * 1e-3 * sample_rate))


def count_pair_matches(
    gt_times,
    gt_codes,
    sorted_times,
    sorted_codes,
    n_gt_units: int,
    n_sorted_units: int,
    tolerance: int,
) -> np.ndarray:
    """Matched spike counts of every (GT unit, sorted unit) pair.

    Parameters
    ----------
    gt_times, sorted_times : array of int
        Spike times (samples).
    gt_codes, sorted_codes : array of int
        Unit index of each spike, in ``0..n_gt_units-1`` and ``0..n_sorted_units-1``.
    n_gt_units, n_sorted_units : int
        Number of units on each side.
    tolerance : int
        Largest time difference (samples) of two matching spikes.

    Returns
    -------
    ndarray of int64, shape (n_gt_units, n_sorted_units)
        Size of the maximum one-to-one pairing of the two units' spikes (see the module
        docstring).
    """
    counts = np.zeros((n_gt_units, n_sorted_units), dtype=np.int64)
    if n_gt_units == 0 or n_sorted_units == 0 or len(gt_times) == 0 or len(sorted_times) == 0:
        return counts
    gt_t, gt_c = _sort_by_time(gt_times, gt_codes)
    st_t, st_c = _sort_by_time(sorted_times, sorted_codes)
    for g, st in independent_steps(gt_t, st_t, tolerance):
        _count_step_matches(counts, gt_t[g], gt_c[g], st_t[st], st_c[st], tolerance)
    return counts


def independent_steps(gt_t: np.ndarray, st_t: np.ndarray, tolerance: int, step: int = MATCH_STEP):
    """``(GT slice, sorted slice)`` of consecutive stretches of time no candidate edge crosses.

    A stretch ends about every ``step`` sorted spikes, at a time with no spike of either train
    within ``tolerance + 1`` samples, so every pairing (and every chain of ambiguous edges) lies
    inside one stretch and the matches of the stretches add up to those of the whole trains.
    """
    g0 = s0 = 0
    s = step
    while s < st_t.size:
        if st_t[s] - st_t[s - 1] > 2 * tolerance + 2:
            cut = int(st_t[s - 1]) + tolerance + 1
            lo = np.searchsorted(gt_t, cut - tolerance - 1, side="left")
            hi = np.searchsorted(gt_t, cut + tolerance + 1, side="right")
            if lo == hi:
                yield slice(g0, lo), slice(s0, s)
                g0, s0 = lo, s
                s += step
                continue
        s += 1
    yield slice(g0, gt_t.size), slice(s0, st_t.size)


def _count_step_matches(counts, gt_t, gt_c, st_t, st_c, tolerance: int) -> None:
    """Add the matches of one stretch of time (time-sorted trains) to ``counts``."""
    n_gt_units, n_sorted_units = counts.shape
    edge_gt, edge_st = candidate_edges(gt_t, st_t, tolerance)
    if len(edge_gt) == 0:
        return
    edge_gt_unit = gt_c[edge_gt]
    edge_st_unit = st_c[edge_st]
    uncertain = _shares_key(edge_gt * n_sorted_units + edge_st_unit) | _shares_key(
        edge_st * n_gt_units + edge_gt_unit
    )
    pair = edge_gt_unit * n_sorted_units + edge_st_unit
    certain = np.bincount(pair[~uncertain], minlength=n_gt_units * n_sorted_units)
    counts += certain.reshape(n_gt_units, n_sorted_units)
    if uncertain.any():
        _add_uncertain_matches(
            counts,
            pair[uncertain],
            edge_gt[uncertain],
            edge_st[uncertain],
            gt_t,
            st_t,
            n_sorted_units,
            tolerance,
        )


def candidate_edges(gt_t: np.ndarray, st_t: np.ndarray, tolerance: int):
    """Every (GT spike, sorted spike) index pair whose times differ by at most ``tolerance``.

    Parameters
    ----------
    gt_t, st_t : ndarray of int64
        Time-sorted spike times.
    tolerance : int
        Tolerance (samples).

    Returns
    -------
    edge_gt, edge_st : ndarray of int64
        Indices into ``gt_t`` and ``st_t``, ordered by sorted spike, then GT spike.
    """
    lo = np.searchsorted(gt_t, st_t - tolerance, side="left")
    hi = np.searchsorted(gt_t, st_t + tolerance, side="right")
    n_near = (hi - lo).astype(np.int64)
    n_edges = int(n_near.sum())
    edge_st = np.repeat(np.arange(len(st_t), dtype=np.int64), n_near)
    first_edge = np.cumsum(n_near) - n_near
    edge_gt = np.arange(n_edges, dtype=np.int64) + np.repeat(lo - first_edge, n_near)
    return edge_gt, edge_st


def greedy_match_count(a, b, tolerance: int) -> int:
    """Size of the maximum one-to-one pairing of two sorted time lists within ``tolerance``.

    Pairs the earliest two spikes within tolerance, drops a spike that can no longer pair, and
    goes on; for sorted lists this greedy pairing is maximal.

    Parameters
    ----------
    a, b : sequence of int
        Sorted spike times.
    tolerance : int
        Tolerance (samples).

    Returns
    -------
    int
        Number of pairs.
    """
    i = j = n = 0
    n_a, n_b = len(a), len(b)
    while i < n_a and j < n_b:
        if a[i] < b[j] - tolerance:
            i += 1
        elif b[j] < a[i] - tolerance:
            j += 1
        else:
            n += 1
            i += 1
            j += 1
    return n


def _sort_by_time(times, codes):
    times = np.asarray(times).astype(np.int64, copy=False)
    codes = np.asarray(codes).astype(np.int64, copy=False)
    if len(times) > 1 and np.any(times[1:] < times[:-1]):
        order = np.argsort(times, kind="stable")
        return times[order], codes[order]
    return times, codes


def _shares_key(keys: np.ndarray) -> np.ndarray:
    """True where the key occurs more than once."""
    order = np.argsort(keys, kind="stable")  # keys are nearly sorted: fast
    ordered = keys[order]
    same_as_next = ordered[1:] == ordered[:-1]
    shared = np.zeros(len(keys), dtype=bool)
    shared[1:] |= same_as_next
    shared[:-1] |= same_as_next
    out = np.empty_like(shared)
    out[order] = shared
    return out


def _add_uncertain_matches(counts, pair, edge_gt, edge_st, gt_t, st_t, n_sorted_units, tolerance):
    """Run the exact greedy pairing on the edges of each pair whose spikes have several partners.

    Every spike touching such an edge has all its same-pair edges among them, so the pairing of
    these spikes alone is exact and adds to the certain matches.
    """
    gt_pair, gt_spike = _unique_pairs(pair, edge_gt)
    st_pair, st_spike = _unique_pairs(pair, edge_st)
    pairs, gt_starts = np.unique(gt_pair, return_index=True)
    _, st_starts = np.unique(st_pair, return_index=True)
    gt_times = gt_t[gt_spike].tolist()
    st_times = st_t[st_spike].tolist()
    gt_bounds = np.r_[gt_starts, len(gt_pair)].tolist()
    st_bounds = np.r_[st_starts, len(st_pair)].tolist()
    for k, code in enumerate(pairs.tolist()):
        g, s = divmod(code, n_sorted_units)
        counts[g, s] += greedy_match_count(
            gt_times[gt_bounds[k] : gt_bounds[k + 1]],
            st_times[st_bounds[k] : st_bounds[k + 1]],
            tolerance,
        )
    logger.debug("exact pairing of %d ambiguous edges in %d unit pairs", len(pair), len(pairs))


def _unique_pairs(major: np.ndarray, minor: np.ndarray):
    """Distinct (major, minor) rows, sorted by major then minor."""
    order = np.lexsort((minor, major))
    major, minor = major[order], minor[order]
    new = np.r_[True, (major[1:] != major[:-1]) | (minor[1:] != minor[:-1])]
    return major[new], minor[new]


def agreement_matrix(n_matches: np.ndarray, n_gt: np.ndarray, n_sorted: np.ndarray):
    """Agreement ``n_matches / (n_gt + n_sorted - n_matches)`` of every pair of units.

    Parameters
    ----------
    n_matches : ndarray, shape (n_gt_units, n_sorted_units)
    n_gt : ndarray, shape (n_gt_units,)
        Spike count of each GT unit.
    n_sorted : ndarray, shape (n_sorted_units,)
        Spike count of each sorted unit.

    Returns
    -------
    ndarray of float64, same shape as ``n_matches``
    """
    union = n_gt[:, None] + n_sorted[None, :] - n_matches
    return np.divide(n_matches, union, out=np.zeros(n_matches.shape), where=union > 0)


def hungarian_pairs(agreement: np.ndarray, min_agreement: float = 0.0) -> dict:
    """``{gt index: sorted index}`` of the assignment maximising the total agreement.

    Parameters
    ----------
    agreement : ndarray, shape (n_gt_units, n_sorted_units)
    min_agreement : float
        Assigned pairs with agreement at or below this are left out (by default those with
        zero agreement).

    Returns
    -------
    dict
    """
    if agreement.size == 0:
        return {}
    from scipy.optimize import linear_sum_assignment  # scoring only: not on every stage's start

    rows, cols = linear_sum_assignment(agreement, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols) if agreement[r, c] > min_agreement}
