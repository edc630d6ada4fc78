"""Score a sorting against ground truth: per-unit accuracy, recall, precision and a summary.

Matching rule
-------------
A ground-truth (GT) spike and a sorted spike *match* when their times differ by at most the
tolerance, ``round(tolerance_ms * 1e-3 * sample_rate)`` samples (0.4 ms by default). For every
pair (GT unit ``g``, sorted unit ``s``), ``n_matches[g, s]`` is the size of a maximum one-to-one
pairing between the spikes of ``g`` and those of ``s``: within one pair of units each spike pairs
at most once. For two time-sorted spike trains this equals the greedy pairing in time order
(pair the earliest two spikes that are within tolerance, drop a spike that can no longer pair, go
on). Different pairs of units are counted independently: a sorted spike close to spikes of two GT
units counts once for each of the two pairs.

The agreement of a pair is ``n_matches / (n_gt + n_sorted - n_matches)``. GT units are paired
with sorted units by the Hungarian assignment maximising the total agreement
(:func:`scipy.optimize.linear_sum_assignment`); assigned pairs with zero agreement are dropped.
For a GT unit matched to sorted unit ``s``: ``tp = n_matches``, ``fn = n_gt - tp``,
``fp = n_sorted - tp`` (spikes of ``s`` that pair with no spike of the GT unit), and
``accuracy = tp / (tp + fn + fp)`` (the agreement), ``recall = tp / n_gt``,
``precision = tp / n_sorted``. An unmatched GT unit has ``sorted_unit = -1``, ``tp = 0``,
``fn = n_gt`` and accuracy and recall 0.

Unit classes of the summary (thresholds are parameters of :func:`score_spike_trains`):

* well detected: GT units with accuracy >= 0.8;
* false-positive units: sorted units without a Hungarian match whose agreement with every GT
  unit is below 0.2;
* redundant units: sorted units without a Hungarian match whose agreement with some GT unit is
  at least 0.2 (typically one piece of a split unit);
* overmerged units: sorted units (matched or not) whose agreement is at least 0.2 with two or
  more GT units.

Computation
-----------
The GT spikes are sorted by time; for each sorted spike ``np.searchsorted`` finds the GT spikes
within tolerance, giving candidate edges (GT spike, sorted spike). An edge whose two spikes have
no other edge within the same pair of units is a certain match; those are counted with
``np.bincount`` over pair codes. The remaining edges (a spike with two possible partners of the
same unit, e.g. a doublet) form separate groups on which the exact greedy pairing runs. The cost
is dominated by a few sorts of the edge list: ~1e6 spikes a side take seconds on one core.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError, KilosnakeError

logger = logging.getLogger(__name__)

#: default time tolerance of a match (ms)
DEFAULT_TOLERANCE_MS = 0.4
#: sorted spikes matched per stretch of time (bounds the matching's scratch memory)
MATCH_STEP = 1 << 17
#: GT units at or above this accuracy are "well detected"
DEFAULT_WELL_DETECTED_ACCURACY = 0.8
#: agreement at or above which an unmatched sorted unit is redundant (below: false positive)
DEFAULT_REDUNDANT_AGREEMENT = 0.2
#: agreement at or above which a sorted unit counts towards two GT units (overmerged)
DEFAULT_OVERMERGED_AGREEMENT = 0.2
#: SNR boundaries of the per-SNR groups of the summary
SNR_GROUP_EDGES = (3.0, 5.0, 10.0)
#: SNR from which a GT unit is "detectable" in the headline benchmark figures
HEADLINE_SNR = 5.0
#: recall counted in the headline benchmark figures
HEADLINE_RECALL = 0.9

PER_UNIT_FIELDS = ("gt_unit", "sorted_unit", "n_gt", "n_sorted", "tp", "fn", "fp", "accuracy",
                   "recall", "precision", "snr")


# --------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass
class ScoreResult:
    """The score of one sorting against ground truth.

    Attributes
    ----------
    per_unit : list of dict
        One dict per GT unit (in ``gt_unit_ids`` order) with the keys of ``PER_UNIT_FIELDS``;
        ``snr`` is NaN without SNR information, ``precision`` NaN for an unmatched unit.
    summary : dict
        Counts and means (see :func:`score_spike_trains`).
    agreement : ndarray, shape (n_gt_units, n_sorted_units)
        Agreement of every pair of units.
    n_matches : ndarray, shape (n_gt_units, n_sorted_units)
        Matched spike counts of every pair of units.
    gt_unit_ids, sorted_unit_ids : ndarray of int64
        Unit ids labelling the rows and columns of ``agreement``.
    false_positive_units, redundant_units, overmerged_units : list of int
        Sorted unit ids of each class.
    """

    per_unit: list
    summary: dict
    agreement: np.ndarray
    n_matches: np.ndarray
    gt_unit_ids: np.ndarray
    sorted_unit_ids: np.ndarray
    false_positive_units: list
    redundant_units: list
    overmerged_units: list

    def to_dict(self) -> dict:
        """Per-unit rows, summary and unit classes as plain JSON-able Python (NaN as None)."""
        return _json_ready({
            "summary": self.summary,
            "per_unit": self.per_unit,
            "false_positive_units": self.false_positive_units,
            "redundant_units": self.redundant_units,
            "overmerged_units": self.overmerged_units,
        })

    def to_json(self, path=None, indent: int = 1) -> str:
        """The result as JSON text; also written to ``path`` when given.

        Parameters
        ----------
        path : str or Path, optional
            File to write.
        indent : int
            JSON indentation.

        Returns
        -------
        str
            The JSON text (strict JSON: NaN is written as ``null``).
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_text(self) -> str:
        """A human-readable scorecard: one table row per GT unit, then the summary."""
        return "\n".join([_scorecard_header(self.summary), "",
                          _unit_table(self.per_unit), "",
                          _summary_block(self.summary)]) + "\n"


@dataclasses.dataclass
class GroundTruth:
    """Ground-truth spikes of a generated recording.

    Attributes
    ----------
    times : ndarray of uint64
        Spike times (samples).
    units : ndarray of int64
        Unit id of each spike.
    snr : ndarray of float64 or None
        SNR of each unit, indexed by unit id.
    sample_rate : float or None
        Sampling rate (Hz), from the companion ``.meta.json`` when found.
    """

    times: np.ndarray
    units: np.ndarray
    snr: np.ndarray | None = None
    sample_rate: float | None = None


# --------------------------------------------------------------------------------------------
# matching


def tolerance_in_samples(tolerance_ms: float, sample_rate: float) -> int:
    """Match tolerance in samples: ``round(tolerance_ms * 1e-3 * sample_rate)``."""
    return int(round(tolerance_ms * 1e-3 * sample_rate))


def count_pair_matches(gt_times, gt_codes, sorted_times, sorted_codes, n_gt_units: int,
                       n_sorted_units: int, tolerance: int) -> np.ndarray:
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


def independent_steps(gt_t: np.ndarray, st_t: np.ndarray, tolerance: int,
                      step: int = MATCH_STEP):
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
    uncertain = (_shares_key(edge_gt * n_sorted_units + edge_st_unit)
                 | _shares_key(edge_st * n_gt_units + edge_gt_unit))
    pair = edge_gt_unit * n_sorted_units + edge_st_unit
    certain = np.bincount(pair[~uncertain], minlength=n_gt_units * n_sorted_units)
    counts += certain.reshape(n_gt_units, n_sorted_units)
    if uncertain.any():
        _add_uncertain_matches(counts, pair[uncertain], edge_gt[uncertain], edge_st[uncertain],
                               gt_t, st_t, n_sorted_units, tolerance)


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


def _add_uncertain_matches(counts, pair, edge_gt, edge_st, gt_t, st_t, n_sorted_units,
                           tolerance):
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
        counts[g, s] += greedy_match_count(gt_times[gt_bounds[k]:gt_bounds[k + 1]],
                                           st_times[st_bounds[k]:st_bounds[k + 1]], tolerance)
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
    rows, cols = linear_sum_assignment(agreement, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols) if agreement[r, c] > min_agreement}


# --------------------------------------------------------------------------------------------
# scoring


def score_spike_trains(gt_times, gt_units, sorted_times, sorted_units, sample_rate: float,
                       tolerance_ms: float = DEFAULT_TOLERANCE_MS,
                       well_detected_accuracy: float = DEFAULT_WELL_DETECTED_ACCURACY,
                       gt_snr=None, redundant_agreement: float = DEFAULT_REDUNDANT_AGREEMENT,
                       overmerged_agreement: float = DEFAULT_OVERMERGED_AGREEMENT,
                       min_match_agreement: float = 0.0) -> ScoreResult:
    """Score sorted spike trains against ground-truth spike trains.

    Matching and unit classes follow the rules of the module docstring.

    Parameters
    ----------
    gt_times, sorted_times : array of int
        Spike times (samples), in any order.
    gt_units, sorted_units : array of int
        Unit id of each spike.
    sample_rate : float
        Sampling rate (Hz), to turn ``tolerance_ms`` into samples.
    tolerance_ms : float
        Largest time difference of matching spikes (ms).
    well_detected_accuracy : float
        Accuracy from which a GT unit is well detected.
    gt_snr : array of float, optional
        SNR of each GT unit, indexed by GT unit id.
    redundant_agreement : float
        Agreement from which an unmatched sorted unit is redundant rather than a false positive.
    overmerged_agreement : float
        Agreement with two or more GT units from which a sorted unit is overmerged.
    min_match_agreement : float
        Hungarian pairs with agreement at or below this are not matches (default 0: only
        pairs without any matched spike are dropped). A small positive value (e.g. 0.1) keeps
        chance coincidences from pairing an undetected GT unit with an unrelated sorted unit.

    Returns
    -------
    ScoreResult
        Its ``summary`` holds ``n_gt_units``, ``n_sorted_units``, ``n_matched``,
        ``n_well_detected``, ``n_false_positive``, ``n_redundant``, ``n_overmerged``, mean
        accuracy / recall / precision, and with SNR information the counts of GT units with
        ``snr >= 5`` (``n_snr_ge_5``), of those with recall >= 0.9 and of those well detected,
        plus ``snr_groups`` (count, means and counts per SNR range).
    """
    gt_times, gt_units = _checked_train(gt_times, gt_units, "ground truth")
    sorted_times, sorted_units = _checked_train(sorted_times, sorted_units, "sorting")
    if not sample_rate or sample_rate <= 0:
        raise InputError(f"sample rate {sample_rate!r} is not positive",
                         "give the recording's sampling rate in Hz")
    tolerance = tolerance_in_samples(tolerance_ms, sample_rate)
    gt_ids, gt_codes, n_gt = _unit_codes(gt_units)
    st_ids, st_codes, n_sorted = _unit_codes(sorted_units)
    n_matches = count_pair_matches(gt_times, gt_codes, sorted_times, sorted_codes=st_codes,
                                   n_gt_units=len(gt_ids), n_sorted_units=len(st_ids),
                                   tolerance=tolerance)
    agreement = agreement_matrix(n_matches, n_gt, n_sorted)
    matched = hungarian_pairs(agreement, min_match_agreement)
    snr = _snr_of_units(gt_ids, gt_snr)
    per_unit = [_unit_row(i, gt_ids, st_ids, n_gt, n_sorted, n_matches, matched, snr)
                for i in range(len(gt_ids))]
    fp_units, redundant, overmerged = _classify_sorted_units(
        agreement, matched, st_ids, redundant_agreement, overmerged_agreement)
    summary = _summary(per_unit, len(st_ids), len(fp_units), len(redundant), len(overmerged),
                       well_detected_accuracy, snr is not None)
    summary.update(sample_rate=float(sample_rate), tolerance_ms=float(tolerance_ms),
                   tolerance_samples=tolerance, n_gt_spikes=int(len(gt_times)),
                   n_sorted_spikes=int(len(sorted_times)),
                   well_detected_accuracy=float(well_detected_accuracy),
                   redundant_agreement=float(redundant_agreement),
                   overmerged_agreement=float(overmerged_agreement),
                   min_match_agreement=float(min_match_agreement))
    return ScoreResult(per_unit=per_unit, summary=summary, agreement=agreement,
                       n_matches=n_matches, gt_unit_ids=gt_ids, sorted_unit_ids=st_ids,
                       false_positive_units=fp_units, redundant_units=redundant,
                       overmerged_units=overmerged)


def _checked_train(times, units, what: str):
    times = np.asarray(times).ravel()
    units = np.asarray(units).ravel()
    if times.shape != units.shape:
        raise InputError(f"{what}: {len(times)} spike times but {len(units)} unit labels",
                         "give one unit label per spike")
    if times.size and not np.issubdtype(times.dtype, np.integer):
        if not np.all(times == np.round(times)):
            raise InputError(f"{what}: spike times are not whole samples",
                             "give spike times in samples, not seconds")
    if times.size and times.min() < 0:
        raise InputError(f"{what}: negative spike times", "give spike times in samples from 0")
    if times.dtype == np.uint64 and (times.size == 0 or times.max() < 2 ** 63):
        times = times.view(np.int64)  # the same values, no copy
    return times.astype(np.int64, copy=False), units.astype(np.int64, copy=False)


#: unit ids below this are coded with a lookup table (no sort of the spikes)
_SMALL_IDS = 1 << 20


def _unit_codes(units: np.ndarray):
    """Sorted unique unit ids, each spike's index into them, and each unit's spike count."""
    if units.size and units.min() >= 0 and units.max() < _SMALL_IDS:
        present = np.bincount(units)
        ids = np.flatnonzero(present)
        lookup = np.cumsum(present > 0) - 1
        return ids.astype(np.int64), lookup[units].astype(np.int64, copy=False), \
            present[ids].astype(np.int64)
    ids, codes = np.unique(units, return_inverse=True)
    counts = np.bincount(codes, minlength=len(ids)).astype(np.int64)
    return ids.astype(np.int64), codes.astype(np.int64, copy=False).ravel(), counts


def _snr_of_units(gt_ids: np.ndarray, gt_snr):
    if gt_snr is None:
        return None
    gt_snr = np.asarray(gt_snr, dtype=np.float64).ravel()
    snr = np.full(len(gt_ids), np.nan)
    known = (gt_ids >= 0) & (gt_ids < len(gt_snr))
    snr[known] = gt_snr[gt_ids[known]]
    if not known.all():
        logger.warning("no SNR for GT units %s", gt_ids[~known].tolist())
    return snr


def _unit_row(i, gt_ids, st_ids, n_gt, n_sorted, n_matches, matched, snr) -> dict:
    """The per-unit record of GT unit index ``i``."""
    n = int(n_gt[i])
    j = matched.get(i)
    if j is None:
        sorted_unit, n_s, tp = -1, 0, 0
    else:
        sorted_unit, n_s, tp = int(st_ids[j]), int(n_sorted[j]), int(n_matches[i, j])
    fn, fp = n - tp, n_s - tp
    return {"gt_unit": int(gt_ids[i]), "sorted_unit": sorted_unit, "n_gt": n, "n_sorted": n_s,
            "tp": tp, "fn": fn, "fp": fp,
            "accuracy": tp / (tp + fn + fp) if tp + fn + fp else 0.0,
            "recall": tp / n if n else 0.0,
            "precision": tp / n_s if n_s else math.nan,
            "snr": float(snr[i]) if snr is not None else math.nan}


def _classify_sorted_units(agreement, matched, st_ids, redundant_agreement, overmerged_agreement):
    """Sorted unit ids that are false positives, redundant, and overmerged."""
    n_sorted_units = agreement.shape[1]
    is_matched = np.zeros(n_sorted_units, dtype=bool)
    is_matched[list(matched.values())] = True
    if agreement.shape[0]:
        best = agreement.max(axis=0)
    else:
        best = np.zeros(n_sorted_units)
    n_close_gt = (agreement >= overmerged_agreement).sum(axis=0)
    false_positive = ~is_matched & (best < redundant_agreement)
    redundant = ~is_matched & (best >= redundant_agreement)
    overmerged = n_close_gt >= 2
    return (st_ids[false_positive].tolist(), st_ids[redundant].tolist(),
            st_ids[overmerged].tolist())


def _summary(per_unit, n_sorted_units, n_fp, n_redundant, n_overmerged, well_detected_accuracy,
             has_snr: bool) -> dict:
    accuracy = np.array([u["accuracy"] for u in per_unit], dtype=np.float64)
    recall = np.array([u["recall"] for u in per_unit], dtype=np.float64)
    precision = np.array([u["precision"] for u in per_unit if u["sorted_unit"] >= 0],
                         dtype=np.float64)
    summary = {
        "n_gt_units": len(per_unit),
        "n_sorted_units": int(n_sorted_units),
        "n_matched": int(sum(u["sorted_unit"] >= 0 for u in per_unit)),
        "n_well_detected": int(np.sum(accuracy >= well_detected_accuracy)),
        "n_false_positive": int(n_fp),
        "n_redundant": int(n_redundant),
        "n_overmerged": int(n_overmerged),
        "mean_accuracy": _mean(accuracy),
        "median_accuracy": float(np.median(accuracy)) if len(accuracy) else math.nan,
        "mean_recall": _mean(recall),
        "mean_precision_matched": _mean(precision),
    }
    if has_snr:
        snr = np.array([u["snr"] for u in per_unit], dtype=np.float64)
        summary.update(_headline_snr_figures(snr, recall, accuracy, well_detected_accuracy))
        summary["snr_groups"] = _snr_groups(snr, recall, accuracy, well_detected_accuracy)
    return summary


def _headline_snr_figures(snr, recall, accuracy, well_detected_accuracy) -> dict:
    detectable = snr >= HEADLINE_SNR
    tag = f"snr_ge_{HEADLINE_SNR:g}"
    return {f"n_{tag}": int(detectable.sum()),
            f"n_{tag}_recall_ge_{HEADLINE_RECALL:g}":
                int(np.sum(detectable & (recall >= HEADLINE_RECALL))),
            f"n_{tag}_well_detected":
                int(np.sum(detectable & (accuracy >= well_detected_accuracy))),
            f"mean_recall_{tag}": _mean(recall[detectable])}


def _snr_groups(snr, recall, accuracy, well_detected_accuracy) -> list:
    """Count, mean recall / accuracy and detection counts per SNR range."""
    edges = (-math.inf, *SNR_GROUP_EDGES, math.inf)
    groups = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (snr >= lo) & (snr < hi)
        groups.append({
            "snr_min": None if math.isinf(lo) else lo,
            "snr_max": None if math.isinf(hi) else hi,
            "n_units": int(inside.sum()),
            f"n_recall_ge_{HEADLINE_RECALL:g}": int(np.sum(inside & (recall >= HEADLINE_RECALL))),
            "n_well_detected": int(np.sum(inside & (accuracy >= well_detected_accuracy))),
            "mean_recall": _mean(recall[inside]),
            "mean_accuracy": _mean(accuracy[inside]),
        })
    return groups


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# scorecard text


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _scorecard_header(summary: dict) -> str:
    return (f"Ground-truth scorecard: {summary['n_gt_units']} GT units, "
            f"{summary['n_sorted_units']} sorted units; match tolerance "
            f"{summary['tolerance_ms']:g} ms ({summary['tolerance_samples']} samples at "
            f"{summary['sample_rate']:g} Hz)")


def _unit_table(per_unit: list) -> str:
    columns = (("gt_unit", "d", 7), ("snr", ".2f", 7), ("n_gt", "d", 8), ("sorted_unit", "d", 11),
               ("n_sorted", "d", 8), ("tp", "d", 8), ("fn", "d", 8), ("fp", "d", 8),
               ("accuracy", ".3f", 8), ("recall", ".3f", 6), ("precision", ".3f", 9))
    header = " ".join(name.rjust(width) for name, _, width in columns)
    lines = [header, "-" * len(header)]
    for unit in per_unit:
        cells = []
        for name, spec, width in columns:
            value = unit[name]
            if name == "sorted_unit" and value < 0:
                value = None
            cells.append(_fmt(value, spec).rjust(width))
        lines.append(" ".join(cells))
    if not per_unit:
        lines.append("(no ground-truth units)")
    return "\n".join(lines)


def _summary_block(s: dict) -> str:
    rows = [
        ("GT units", s["n_gt_units"]),
        ("sorted units", s["n_sorted_units"]),
        ("matched GT units", s["n_matched"]),
        (f"well detected (accuracy >= {s['well_detected_accuracy']:g})",
         f"{s['n_well_detected']} / {s['n_gt_units']}"),
        ("false-positive units", s["n_false_positive"]),
        ("redundant units", s["n_redundant"]),
        ("overmerged units", s["n_overmerged"]),
        ("mean accuracy / recall",
         f"{_fmt(s['mean_accuracy'], '.3f')} / {_fmt(s['mean_recall'], '.3f')}"),
        ("mean precision (matched units)", _fmt(s["mean_precision_matched"], ".3f")),
    ]
    lines = ["Summary"] + [f"  {label:<36}{value}" for label, value in rows]
    tag = f"snr_ge_{HEADLINE_SNR:g}"
    if f"n_{tag}" in s:
        recall_key = f"n_recall_ge_{HEADLINE_RECALL:g}"
        lines.append(
            f"  SNR >= {HEADLINE_SNR:g}: {s[f'n_{tag}']} GT units, "
            f"{s[f'n_{tag}_recall_ge_{HEADLINE_RECALL:g}']} with recall >= {HEADLINE_RECALL:g}, "
            f"{s[f'n_{tag}_well_detected']} well detected")
        lines.append(f"  {'SNR':>8} {'units':>6} {f'recall>={HEADLINE_RECALL:g}':>12} "
                     f"{'well detected':>14} {'mean recall':>12} {'mean accuracy':>14}")
        for g in s["snr_groups"]:
            lines.append(f"  {_snr_range_label(g['snr_min'], g['snr_max']):>8} "
                         f"{g['n_units']:>6} {g[recall_key]:>12} {g['n_well_detected']:>14} "
                         f"{_fmt(g['mean_recall'], '.3f'):>12} "
                         f"{_fmt(g['mean_accuracy'], '.3f'):>14}")
    return "\n".join(lines)


def _snr_range_label(lo, hi) -> str:
    if lo is None:
        return f"<{hi:g}"
    if hi is None:
        return f">={lo:g}"
    return f"{lo:g}-{hi:g}"


# --------------------------------------------------------------------------------------------
# loaders


def load_ground_truth(gt_npz) -> GroundTruth:
    """Load a ground-truth ``.npz`` (``spike_times``, ``spike_units``, optional ``snr``).

    The sampling rate comes from a ``sample_rate`` entry of the file if any, else from the
    companion ``<name>.meta.json`` (for ``x_gt.npz`` also ``x.meta.json``).

    Parameters
    ----------
    gt_npz : str or Path
        The ground-truth file.

    Returns
    -------
    GroundTruth
    """
    path = Path(gt_npz)
    if not path.is_file():
        raise InputError(f"ground-truth file {str(path)!r} does not exist",
                         "give the .npz written with the generated recording")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("spike_times", "spike_units") if k not in data.files]
        if missing:
            raise InputError(f"ground-truth file {str(path)!r} lacks {', '.join(missing)}",
                             "give a file with spike_times and spike_units arrays")
        times = np.asarray(data["spike_times"]).ravel().astype(np.uint64, copy=False)
        units = np.asarray(data["spike_units"]).ravel().astype(np.int64)
        snr = np.asarray(data["snr"], dtype=np.float64).ravel() if "snr" in data.files else None
        sample_rate = float(data["sample_rate"]) if "sample_rate" in data.files else None
    if sample_rate is None:
        sample_rate = _sample_rate_from_meta(path)
    return GroundTruth(times=times, units=units, snr=snr, sample_rate=sample_rate)


def _meta_candidates(gt_path: Path):
    stem = gt_path.name[: -len(".npz")] if gt_path.name.endswith(".npz") else gt_path.stem
    names = [f"{stem}.meta.json"]
    for suffix in ("_gt", ".gt", "-gt"):
        if stem.endswith(suffix):
            names.append(f"{stem[: -len(suffix)]}.meta.json")
    return [gt_path.with_name(n) for n in names]


def _sample_rate_from_meta(gt_path: Path):
    for meta in _meta_candidates(gt_path):
        if meta.is_file():
            rate = json.loads(meta.read_text()).get("sample_rate")
            if rate is not None:
                return float(rate)
    return None


def read_phy_params(phy_dir) -> dict:
    """The literal assignments of a Phy folder's ``params.py`` (parsed, never executed).

    Parameters
    ----------
    phy_dir : str or Path
        The Phy folder.

    Returns
    -------
    dict
        ``{name: value}`` for each ``name = <literal>`` line; empty without ``params.py``.
    """
    path = Path(phy_dir) / "params.py"
    if not path.is_file():
        return {}
    text = path.read_text()
    try:
        statements = ast.parse(text).body
    except SyntaxError:
        statements = []
        for line in text.splitlines():
            try:
                statements.extend(ast.parse(line).body)
            except SyntaxError:
                logger.warning("params.py: skipping unreadable line %r", line)
    params = {}
    for node in statements:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                logger.debug("params.py: %s is not a literal", node.targets[0].id)
    return params


def read_noise_clusters(phy_dir) -> set:
    """Cluster ids labelled ``noise`` in the Phy folder's ``cluster_group.tsv`` (if any)."""
    path = Path(phy_dir) / "cluster_group.tsv"
    if not path.is_file():
        return set()
    noise = set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            cluster = row.get("cluster_id", row.get("id"))
            group = (row.get("group") or row.get("KSLabel") or "").strip().lower()
            if cluster is not None and group == "noise":
                noise.add(int(cluster))
    return noise


def load_phy_sorting(phy_dir):
    """Spike times and cluster ids of a Phy folder, without the clusters labelled noise.

    Reads ``spike_times.npy`` and ``spike_clusters.npy`` (``spike_templates.npy`` when there is
    no cluster file); clusters labelled ``noise`` in ``cluster_group.tsv`` are left out.

    Parameters
    ----------
    phy_dir : str or Path
        The Phy folder.

    Returns
    -------
    times : ndarray of uint64
    clusters : ndarray of int64
    """
    folder = Path(phy_dir)
    times_path = folder / "spike_times.npy"
    if not times_path.is_file():
        raise InputError(f"{str(folder)!r} has no spike_times.npy",
                         "give a Phy folder (as written by kilosnake's export stage)")
    times = np.load(times_path, allow_pickle=False).ravel().astype(np.uint64, copy=False)
    labels_path = folder / "spike_clusters.npy"
    if not labels_path.is_file():
        labels_path = folder / "spike_templates.npy"
    if not labels_path.is_file():
        raise InputError(f"{str(folder)!r} has neither spike_clusters.npy nor "
                         "spike_templates.npy", "give a complete Phy folder")
    clusters = np.load(labels_path, allow_pickle=False).ravel().astype(np.int64)
    if len(clusters) != len(times):
        raise InputError(f"{labels_path.name} has {len(clusters)} entries but spike_times.npy "
                         f"{len(times)}", "give a consistent Phy folder")
    noise = read_noise_clusters(folder)
    if noise:
        keep = ~np.isin(clusters, np.array(sorted(noise), dtype=np.int64))
        logger.info("leaving out %d noise clusters (%d spikes)", len(noise), int((~keep).sum()))
        times, clusters = times[keep], clusters[keep]
    return times, clusters


def load_spikes_store(spikes_zarr):
    """Spike times and template ids of the pipeline's ``spikes.zarr``.

    Parameters
    ----------
    spikes_zarr : str or Path
        The store.

    Returns
    -------
    times : ndarray of uint64
    templates : ndarray of int64
    """
    group = _open_zarr_group(spikes_zarr)
    for name in ("time", "template"):
        if name not in group:
            raise InputError(f"{str(spikes_zarr)!r} has no array {name!r}",
                             "give the spikes.zarr written by the final_pass stage")
    times = np.asarray(group["time"][...]).ravel().astype(np.uint64)
    templates = np.asarray(group["template"][...]).ravel().astype(np.int64)
    return times, templates


def _open_zarr_group(path):
    """Open a finished pipeline store (refuses one whose writer did not complete)."""
    from .store import open_store

    return open_store(path)


def _spikes_store_sample_rate(spikes_zarr):
    """Sampling rate from the store's attributes or the recording's ``input.json`` beside it."""
    attrs = dict(_open_zarr_group(spikes_zarr).attrs)
    for source in (attrs, attrs.get("params") or {}):
        if isinstance(source, dict) and source.get("sample_rate"):
            return float(source["sample_rate"])
    input_json = Path(spikes_zarr).parent / "input.json"
    if input_json.is_file():
        rate = json.loads(input_json.read_text()).get("sample_rate")
        if rate:
            return float(rate)
    return None


def is_phy_folder(path) -> bool:
    """True for a folder holding ``spike_times.npy``."""
    return (Path(path) / "spike_times.npy").is_file()


def is_zarr_group(path) -> bool:
    """True for a folder holding a Zarr group's metadata."""
    path = Path(path)
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


# --------------------------------------------------------------------------------------------
# scoring files


def _pick_sample_rate(explicit, from_sorting, from_gt):
    """The explicit rate, else the sorting's, else the ground truth's; warn when they differ."""
    if from_sorting and from_gt and not math.isclose(from_sorting, from_gt, rel_tol=1e-9):
        logger.warning("sample rate of the sorting (%g Hz) differs from the ground truth's "
                       "(%g Hz)", from_sorting, from_gt)
    rate = explicit or from_sorting or from_gt
    if not rate:
        raise InputError("the sampling rate is unknown",
                         "pass it (--sample-rate / sample_rate=) or put the ground truth's "
                         ".meta.json beside it")
    return float(rate)


def score_sorting(sorting_path, gt_npz, sample_rate: float | None = None,
                  **score_kwargs) -> ScoreResult:
    """Score a Phy folder or a ``spikes.zarr`` against a ground-truth file.

    Parameters
    ----------
    sorting_path : str or Path
        A Phy folder or the pipeline's ``spikes.zarr``.
    gt_npz : str or Path
        Ground-truth file (see :func:`load_ground_truth`).
    sample_rate : float, optional
        Sampling rate (Hz); by default from the sorting (Phy ``params.py``; the store's
        attributes or the ``input.json`` beside it), else from the ground truth's meta file.
    **score_kwargs
        Passed on to :func:`score_spike_trains`.

    Returns
    -------
    ScoreResult
    """
    if is_phy_folder(sorting_path):
        return score_phy_folder(sorting_path, gt_npz, sample_rate=sample_rate, **score_kwargs)
    if is_zarr_group(sorting_path):
        return score_spikes_store(sorting_path, gt_npz, sample_rate=sample_rate, **score_kwargs)
    raise InputError(f"{str(sorting_path)!r} is neither a Phy folder nor a Zarr store",
                     "give a folder with spike_times.npy or a spikes.zarr")


def score_phy_folder(phy_dir, gt_npz, sample_rate: float | None = None,
                     **score_kwargs) -> ScoreResult:
    """Score a Phy folder against a ground-truth file.

    Parameters
    ----------
    phy_dir : str or Path
        The Phy folder (see :func:`load_phy_sorting`).
    gt_npz : str or Path
        Ground-truth file.
    sample_rate : float, optional
        Sampling rate (Hz); by default ``sample_rate`` of the folder's ``params.py``, else the
        ground truth's.
    **score_kwargs
        Passed on to :func:`score_spike_trains`.

    Returns
    -------
    ScoreResult
    """
    gt = load_ground_truth(gt_npz)
    times, clusters = load_phy_sorting(phy_dir)
    phy_rate = read_phy_params(phy_dir).get("sample_rate")
    rate = _pick_sample_rate(sample_rate, float(phy_rate) if phy_rate else None, gt.sample_rate)
    return score_spike_trains(gt.times, gt.units, times, clusters, rate, gt_snr=gt.snr,
                              **score_kwargs)


def score_spikes_store(spikes_zarr, gt_npz, sample_rate: float | None = None,
                       **score_kwargs) -> ScoreResult:
    """Score the templates of a ``spikes.zarr`` as units against a ground-truth file.

    Parameters
    ----------
    spikes_zarr : str or Path
        The store (see :func:`load_spikes_store`).
    gt_npz : str or Path
        Ground-truth file.
    sample_rate : float, optional
        Sampling rate (Hz); by default from the store or the recording's ``input.json``, else
        the ground truth's.
    **score_kwargs
        Passed on to :func:`score_spike_trains`.

    Returns
    -------
    ScoreResult
    """
    gt = load_ground_truth(gt_npz)
    times, templates = load_spikes_store(spikes_zarr)
    rate = _pick_sample_rate(sample_rate, _spikes_store_sample_rate(spikes_zarr), gt.sample_rate)
    return score_spike_trains(gt.times, gt.units, times, templates, rate, gt_snr=gt.snr,
                              **score_kwargs)


# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The ``kilosnake-score`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="kilosnake-score",
        description="Score a sorting (Phy folder or spikes.zarr) against ground truth.")
    parser.add_argument("sorting", help="Phy folder or spikes.zarr")
    parser.add_argument("--gt", required=True, help="ground-truth .npz (spike_times, "
                        "spike_units, optional snr)")
    parser.add_argument("--sample-rate", type=float, default=None,
                        help="sampling rate in Hz (default: from the sorting or the ground "
                             "truth's .meta.json)")
    parser.add_argument("--tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS,
                        help="largest time difference of matching spikes (default %(default)s)")
    parser.add_argument("--well-detected", type=float, default=DEFAULT_WELL_DETECTED_ACCURACY,
                        help="accuracy of a well-detected unit (default %(default)s)")
    parser.add_argument("--min-match-agreement", type=float, default=0.0,
                        help="Hungarian pairs with agreement at or below this are not matches "
                             "(default %(default)s)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    parser.add_argument("--log-level", default="WARNING", help="default %(default)s")
    return parser


def main(argv=None) -> int:
    """Command line: print the scorecard of a sorting; optionally write JSON."""
    args = build_parser().parse_args(argv)
    from .logs import add_default_handler

    handler = add_default_handler(args.log_level)
    try:
        result = score_sorting(args.sorting, args.gt, sample_rate=args.sample_rate,
                               tolerance_ms=args.tolerance_ms,
                               well_detected_accuracy=args.well_detected,
                               min_match_agreement=args.min_match_agreement)
    except KilosnakeError as err:
        print(f"kilosnake-score: {err}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger("kilosnake").removeHandler(handler)
    print(result.to_text(), end="")
    if args.json:
        result.to_json(args.json)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
