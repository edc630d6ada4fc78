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

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError
from kilosnake.groundtruth.matching import (
    DEFAULT_TOLERANCE_MS,
    agreement_matrix,
    count_pair_matches,
    hungarian_pairs,
    tolerance_in_samples,
)
from kilosnake.groundtruth.scorecard import (
    HEADLINE_RECALL,
    HEADLINE_SNR,
    _scorecard_header,
    _summary_block,
    _unit_table,
)
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.io.input_json import read_input_json
from kilosnake.io.phy import is_phy_folder, load_phy_sorting, read_params_py
from kilosnake.io.store import open_store

logger = logging.getLogger(__name__)


#: GT units at or above this accuracy are "well detected"
DEFAULT_WELL_DETECTED_ACCURACY = 0.8
#: agreement at or above which an unmatched sorted unit is redundant (below: false positive)
DEFAULT_REDUNDANT_AGREEMENT = 0.2
#: agreement at or above which a sorted unit counts towards two GT units (overmerged)
DEFAULT_OVERMERGED_AGREEMENT = 0.2
#: SNR boundaries of the per-SNR groups of the summary
SNR_GROUP_EDGES = (3.0, 5.0, 10.0)

PER_UNIT_FIELDS = (
    "gt_unit",
    "sorted_unit",
    "n_gt",
    "n_sorted",
    "tp",
    "fn",
    "fp",
    "accuracy",
    "recall",
    "precision",
    "snr",
)


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
        return _json_ready(
            {
                "summary": self.summary,
                "per_unit": self.per_unit,
                "false_positive_units": self.false_positive_units,
                "redundant_units": self.redundant_units,
                "overmerged_units": self.overmerged_units,
            }
        )

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
        return (
            "\n".join(
                [
                    _scorecard_header(self.summary),
                    "",
                    _unit_table(self.per_unit),
                    "",
                    _summary_block(self.summary),
                ]
            )
            + "\n"
        )


# --------------------------------------------------------------------------------------------
# scoring


def score_spike_trains(
    gt_times,
    gt_units,
    sorted_times,
    sorted_units,
    sample_rate: float,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    well_detected_accuracy: float = DEFAULT_WELL_DETECTED_ACCURACY,
    gt_snr=None,
    redundant_agreement: float = DEFAULT_REDUNDANT_AGREEMENT,
    overmerged_agreement: float = DEFAULT_OVERMERGED_AGREEMENT,
    min_match_agreement: float = 0.0,
) -> ScoreResult:
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
        raise InputError(
            f"sample rate {sample_rate!r} is not positive",
            "give the recording's sampling rate in Hz",
        )
    tolerance = tolerance_in_samples(tolerance_ms, sample_rate)
    gt_ids, gt_codes, n_gt = _unit_codes(gt_units)
    st_ids, st_codes, n_sorted = _unit_codes(sorted_units)
    n_matches = count_pair_matches(
        gt_times,
        gt_codes,
        sorted_times,
        sorted_codes=st_codes,
        n_gt_units=len(gt_ids),
        n_sorted_units=len(st_ids),
        tolerance=tolerance,
    )
    agreement = agreement_matrix(n_matches, n_gt, n_sorted)
    matched = hungarian_pairs(agreement, min_match_agreement)
    snr = _snr_of_units(gt_ids, gt_snr)
    per_unit = [
        _unit_row(i, gt_ids, st_ids, n_gt, n_sorted, n_matches, matched, snr)
        for i in range(len(gt_ids))
    ]
    fp_units, redundant, overmerged = _classify_sorted_units(
        agreement, matched, st_ids, redundant_agreement, overmerged_agreement
    )
    summary = _summary(
        per_unit,
        len(st_ids),
        len(fp_units),
        len(redundant),
        len(overmerged),
        well_detected_accuracy,
        snr is not None,
    )
    summary.update(
        sample_rate=float(sample_rate),
        tolerance_ms=float(tolerance_ms),
        tolerance_samples=tolerance,
        n_gt_spikes=int(len(gt_times)),
        n_sorted_spikes=int(len(sorted_times)),
        well_detected_accuracy=float(well_detected_accuracy),
        redundant_agreement=float(redundant_agreement),
        overmerged_agreement=float(overmerged_agreement),
        min_match_agreement=float(min_match_agreement),
    )
    return ScoreResult(
        per_unit=per_unit,
        summary=summary,
        agreement=agreement,
        n_matches=n_matches,
        gt_unit_ids=gt_ids,
        sorted_unit_ids=st_ids,
        false_positive_units=fp_units,
        redundant_units=redundant,
        overmerged_units=overmerged,
    )


def _checked_train(times, units, what: str):
    times = np.asarray(times).ravel()
    units = np.asarray(units).ravel()
    if times.shape != units.shape:
        raise InputError(
            f"{what}: {len(times)} spike times but {len(units)} unit labels",
            "give one unit label per spike",
        )
    if times.size and not np.issubdtype(times.dtype, np.integer):
        if not np.all(times == np.round(times)):
            raise InputError(
                f"{what}: spike times are not whole samples",
                "give spike times in samples, not seconds",
            )
    if times.size and times.min() < 0:
        raise InputError(f"{what}: negative spike times", "give spike times in samples from 0")
    if times.dtype == np.uint64 and (times.size == 0 or times.max() < 2**63):
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
        return (
            ids.astype(np.int64),
            lookup[units].astype(np.int64, copy=False),
            present[ids].astype(np.int64),
        )
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
    return {
        "gt_unit": int(gt_ids[i]),
        "sorted_unit": sorted_unit,
        "n_gt": n,
        "n_sorted": n_s,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "accuracy": tp / (tp + fn + fp) if tp + fn + fp else 0.0,
        "recall": tp / n if n else 0.0,
        "precision": tp / n_s if n_s else math.nan,
        "snr": float(snr[i]) if snr is not None else math.nan,
    }


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
    return (
        st_ids[false_positive].tolist(),
        st_ids[redundant].tolist(),
        st_ids[overmerged].tolist(),
    )


def _summary(
    per_unit, n_sorted_units, n_fp, n_redundant, n_overmerged, well_detected_accuracy, has_snr: bool
) -> dict:
    accuracy = np.array([u["accuracy"] for u in per_unit], dtype=np.float64)
    recall = np.array([u["recall"] for u in per_unit], dtype=np.float64)
    precision = np.array(
        [u["precision"] for u in per_unit if u["sorted_unit"] >= 0], dtype=np.float64
    )
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
    return {
        f"n_{tag}": int(detectable.sum()),
        f"n_{tag}_recall_ge_{HEADLINE_RECALL:g}": int(
            np.sum(detectable & (recall >= HEADLINE_RECALL))
        ),
        f"n_{tag}_well_detected": int(np.sum(detectable & (accuracy >= well_detected_accuracy))),
        f"mean_recall_{tag}": _mean(recall[detectable]),
    }


def _snr_groups(snr, recall, accuracy, well_detected_accuracy) -> list:
    """Count, mean recall / accuracy and detection counts per SNR range."""
    edges = (-math.inf, *SNR_GROUP_EDGES, math.inf)
    groups = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (snr >= lo) & (snr < hi)
        groups.append(
            {
                "snr_min": None if math.isinf(lo) else lo,
                "snr_max": None if math.isinf(hi) else hi,
                "n_units": int(inside.sum()),
                f"n_recall_ge_{HEADLINE_RECALL:g}": int(
                    np.sum(inside & (recall >= HEADLINE_RECALL))
                ),
                "n_well_detected": int(np.sum(inside & (accuracy >= well_detected_accuracy))),
                "mean_recall": _mean(recall[inside]),
                "mean_accuracy": _mean(accuracy[inside]),
            }
        )
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
            raise InputError(
                f"{str(spikes_zarr)!r} has no array {name!r}",
                "give the spikes.zarr written by the final_pass stage",
            )
    times = np.asarray(group["time"][...]).ravel().astype(np.uint64)
    templates = np.asarray(group["template"][...]).ravel().astype(np.int64)
    return times, templates


def _open_zarr_group(path):
    """Open a finished pipeline store (refuses one whose writer did not complete)."""

    return open_store(path)


def _spikes_store_sample_rate(spikes_zarr):
    """Sampling rate from the store's attributes or the recording's ``input.json`` beside it."""
    attrs = dict(_open_zarr_group(spikes_zarr).attrs)
    for source in (attrs, attrs.get("params") or {}):
        if isinstance(source, dict) and source.get("sample_rate"):
            return float(source["sample_rate"])
    input_json = Path(spikes_zarr).parent / "input.json"
    if input_json.is_file():
        rate = read_input_json(input_json).get("sample_rate")
        if rate:
            return float(rate)
    return None


def is_zarr_group(path) -> bool:
    """True for a folder holding a Zarr group's metadata."""
    path = Path(path)
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


# --------------------------------------------------------------------------------------------
# scoring files


def _pick_sample_rate(explicit, from_sorting, from_gt):
    """The explicit rate, else the sorting's, else the ground truth's; warn when they differ."""
    if from_sorting and from_gt and not math.isclose(from_sorting, from_gt, rel_tol=1e-9):
        logger.warning(
            "sample rate of the sorting (%g Hz) differs from the ground truth's (%g Hz)",
            from_sorting,
            from_gt,
        )
    rate = explicit or from_sorting or from_gt
    if not rate:
        raise InputError(
            "the sampling rate is unknown",
            "pass it (--sample-rate / sample_rate=) or put the ground truth's .meta.json beside it",
        )
    return float(rate)


def score_sorting(
    sorting_path, gt_npz, sample_rate: float | None = None, **score_kwargs
) -> ScoreResult:
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
    raise InputError(
        f"{str(sorting_path)!r} is neither a Phy folder nor a Zarr store",
        "give a folder with spike_times.npy or a spikes.zarr",
    )


def score_phy_folder(
    phy_dir, gt_npz, sample_rate: float | None = None, **score_kwargs
) -> ScoreResult:
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
    phy_rate = read_params_py(phy_dir).get("sample_rate")
    rate = _pick_sample_rate(sample_rate, float(phy_rate) if phy_rate else None, gt.sample_rate)
    return score_spike_trains(
        gt.times, gt.units, times, clusters, rate, gt_snr=gt.snr, **score_kwargs
    )


def score_spikes_store(
    spikes_zarr, gt_npz, sample_rate: float | None = None, **score_kwargs
) -> ScoreResult:
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
    return score_spike_trains(
        gt.times, gt.units, times, templates, rate, gt_snr=gt.snr, **score_kwargs
    )


def write_scorecard(phy_dir, gt_npz, out) -> str:
    """Score a Phy folder against ground truth; write the scorecard text to ``out``.

    Parameters
    ----------
    phy_dir : path
        The exported Phy folder.
    gt_npz : path
        Ground truth of a generated recording.
    out : path
        Text file to write (atomically).

    Returns
    -------
    str
        The scorecard.
    """

    text = score_phy_folder(phy_dir, gt_npz).to_text()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    logger.info("scorecard of %s written to %s", phy_dir, out)
    return text
