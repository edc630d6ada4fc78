"""Score cutoff per cluster and good/mua labels (Kilosort 2.5's ``set_cutoff``, ``get_good_units``).

For each cluster with spikes, the score threshold starts at ``Th[0]`` and drops by 0.5 while it
stays at or above ``Th[1]``. At each threshold the auto-correlogram of the spikes scoring above
it gives ``Q`` and ``R`` (:mod:`kilosnake.curation.ccg`); the descent stops at the first threshold
where ``Q > fcont`` or ``R > cutoff_R_max``. ``fcont`` starts at ``cutoff_fcont``; when the unit
is very clean at ``Th[0]`` (``Q < 0.05``) it is tightened to ``min(0.05, max(0.01, 2 Q))``. A
cluster that passed at least one threshold is refractory-good. The cluster's threshold is the one
at which the descent stopped plus 0.5 (the last threshold tried when the descent ran to ``Th[1]``;
``Th[0] + 0.5`` when the very first one failed, as in Kilosort) and its spikes scoring at or below
it get ``keep = False``. The contamination estimate is ``Q`` of the kept spikes (1 when none,
clipped to [0, 1]).

Spatial test: each cluster's template energy per channel (``Σ_t T²``), channels under 10 % of the
largest set to 0; with the energy-weighted centre of the channel positions, the energy-weighted
mean distance of the channels to it is the spread.

Clusters that are not units: duplicate spikes (one event fitted by two templates,
:func:`kilosnake.curation.fold.duplicate_spikes`, on the clusters after merges and splits) are
left out of every test and never kept; the search runs again on the spikes the descent kept (a
cluster can be a copy of another once its low-score spikes are cut). A cluster left with fewer than
``min_unit_spikes`` kept spikes is folded into the cluster with the most similar template when
their similarity is at least ``fold_sim_min`` (:func:`kilosnake.curation.fold.fold_small_clusters`;
its spikes join that cluster and keep their keep flag; the target's label tests stay those of its
own spikes); one that finds no such cluster is labelled ``noise`` (Phy keeps its spikes under
that label). A cluster is labelled ``good`` when it is refractory-good and
its spread is below ``good_max_spread_um``; every other cluster is ``mua``.
Each label comes with its reason (:func:`label_reason`, from the same quantities): ``good``, or
e.g. "not a unit: 12 spikes (min_unit_spikes 30)", "too few spikes for a refractory test (40 in
30 s)", "contamination 0.23 > 0.1",
"refractory dip not significant in 30 s (R 0.31 > 0.05, 80 spikes)", "template spread 140 µm
>= 100 µm".

The stage writes ``cutoff.zarr``:

* ``keep`` (nspk,) bool: spike kept after the score cutoff (duplicates never are);
* ``duplicate`` (nspk,) bool: the spike repeats another cluster's (left out);
* ``cluster_of`` (n_clusters,) uint32: the cluster each cluster's spikes end in (itself, or the
  one it was folded into);
* ``folds`` (n_folds, 2) uint32 and ``fold_similarity`` (n_folds,) float32: the folds, in order;
* ``good`` (n_clusters,) bool: label good (else mua or noise);
* ``noise`` (n_clusters,) bool: label noise (fewer than ``min_unit_spikes`` kept spikes);
* ``refractory_good`` (n_clusters,) bool: passed the refractory test;
* ``contamination`` (n_clusters,) float64: estimated contamination of the kept spikes, [0, 1];
* ``threshold`` (n_clusters,) float64: score threshold of the cluster;
* ``spread_um`` (n_clusters,) float64: spatial spread of the template (inf if empty);
* ``n_kept`` (n_clusters,) int64: spikes kept (after folds);
* attribute ``label_reason``: per cluster, why it is good or mua.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from kilosnake.curation.ccg import N_CENTRAL, TBIN_S, refractory_stats
from kilosnake.curation.data import read_probe_geometry
from kilosnake.curation.fold import (
    PIECE_BASELINE_S,
    duplicate_spikes,
    fold_pieces,
    fold_small_clusters,
)
from kilosnake.curation.metrics import REFRACTORY_S
from kilosnake.io.input_json import read_input_json
from kilosnake.io.store import open_store, write_array, writing_store
from kilosnake.io.streaming import blocks, columns_by_label, label_counts
from kilosnake.runtime.parallel import imap_ordered, workers_for

logger = logging.getLogger(__name__)

#: threshold step of the descent
STEP = 0.5
#: a unit with Q below this at the first threshold gets a tighter contamination limit
VERY_CLEAN_Q = 0.05
#: channels below this fraction of the peak energy are left out of the spread
ENERGY_FLOOR = 0.1
SPIKE_CHUNK = 1 << 20


@dataclasses.dataclass
class ClusterCutoff:
    """Outcome of the threshold descent for one cluster, with the refractory test at its first
    threshold (the one that decides ``refractory_good``: no spikes above any threshold gives
    ``test_n = 0``)."""

    threshold: float
    contamination: float
    refractory_good: bool
    test_Q: float = float("nan")
    test_R: float = float("nan")
    test_n: int = 0


@dataclasses.dataclass
class CutoffResult:
    """Per-spike keep mask and per-cluster labels."""

    keep: np.ndarray
    good: np.ndarray
    noise: np.ndarray
    refractory_good: np.ndarray
    contamination: np.ndarray
    threshold: np.ndarray
    spread_um: np.ndarray
    reasons: list = dataclasses.field(default_factory=list)
    cluster_of: np.ndarray | None = None  # (n_clusters,) cluster each one's spikes end in
    folds: list = dataclasses.field(default_factory=list)  # [(cluster, target, similarity)]
    duplicate: np.ndarray | None = None  # (nspk,) bool: left out as another cluster's copy
    n_kept: np.ndarray | None = None  # (n_clusters,) spikes kept, after folds


def thresholds(th_high: float, th_low: float) -> np.ndarray:
    """``th_high, th_high - 0.5, ...`` down to ``th_low`` (inclusive, float-safe)."""
    n = int(np.floor((th_high - th_low) / STEP + 1e-9)) + 1
    return th_high - STEP * np.arange(max(n, 0))


def cluster_cutoff(
    times: np.ndarray,
    scores: np.ndarray,
    sample_rate: float,
    th_high: float,
    th_low: float,
    fcont: float = 0.1,
    R_max: float = 0.05,
) -> ClusterCutoff:
    """The threshold descent of one cluster (see the module docstring)."""
    good = False
    first = None
    steps = thresholds(th_high, th_low)
    for k, th in enumerate(steps):
        above = scores > th
        if not above.any():
            continue
        st = refractory_stats(times[above], times[above], sample_rate)
        first = first or (st.Q, st.R, int(above.sum()))
        if st.Q > fcont or st.R > R_max:
            stopped = th
            break
        if k == 0 and st.Q < VERY_CLEAN_Q:
            fcont = min(VERY_CLEAN_Q, max(0.01, 2 * st.Q))
        good = True
    else:
        stopped = steps[-1] - STEP if steps.size else th_high
    th_final = float(stopped + STEP)
    kept = scores > th_final
    q = refractory_stats(times[kept], times[kept], sample_rate).Q if kept.any() else 1.0
    contamination = 1.0 if not np.isfinite(q) else float(np.clip(q, 0.0, 1.0))
    return ClusterCutoff(th_final, contamination, good, *(first or (float("nan"),) * 2 + (0,)))


# --------------------------------------------------------------------------------------------
# why a unit is mua


def min_refractory_R(n_spikes: int, duration_s: float, tbin_s: float = TBIN_S) -> float:
    """The smallest ``R`` a train of ``n_spikes`` Poisson-rate spikes over ``duration_s`` could
    reach with no refractory violation at all (``λ`` = the pairs expected in the widest central
    window, ``R = Φ(-√λ)``, :mod:`kilosnake.curation.ccg`): above ``cutoff_R_max``, no
    dip can be significant with so few spikes in so short a recording."""
    if duration_s <= 0 or n_spikes < 2:
        return 1.0
    lam = N_CENTRAL * n_spikes * n_spikes * tbin_s / duration_s
    return 0.5 * (1.0 + math.erf(-math.sqrt(lam / 2.0)))


def refractory_reason(test: ClusterCutoff, duration_s: float, fcont: float, R_max: float) -> str:
    """Why a unit failed the refractory test of the score cutoff (from the test's ``Q``, ``R``
    and spike count at its first threshold)."""
    n, secs = test.test_n, f"{duration_s:.0f} s"
    if n == 0:
        return "no spike scores above the cutoff thresholds"
    if min_refractory_R(n, duration_s) > R_max:
        return f"too few spikes for a refractory test ({n} in {secs})"
    if test.test_Q > fcont:
        return f"contamination {test.test_Q:.2f} > {fcont:g}"
    return f"refractory dip not significant in {secs} (R {test.test_R:.2f} > {R_max:g}, {n} spikes)"


def label_reason(
    test: ClusterCutoff,
    n_spikes: int,
    spread_um: float,
    duration_s: float,
    fcont: float,
    R_max: float,
    max_spread_um: float,
    n_kept: int | None = None,
    min_unit_spikes: int = 1,
) -> str:
    """Why a cluster is labelled as it is: ``"good"``, or what made it ``mua`` or ``noise`` (the
    same quantities and tests as :func:`apply_cutoff`; ``n_kept`` defaults to ``n_spikes``)."""
    n_kept = n_spikes if n_kept is None else n_kept
    if n_spikes == 0:
        return "no spikes"
    if n_kept < min_unit_spikes:
        return f"not a unit: {n_kept} spikes (min_unit_spikes {min_unit_spikes})"
    if not test.refractory_good:
        return refractory_reason(test, duration_s, fcont, R_max)
    if not spread_um < max_spread_um:
        spread = "empty template" if not np.isfinite(spread_um) else f"{spread_um:.0f} µm"
        return f"template spread {spread} >= {max_spread_um:g} µm"
    return "good"


def template_spread(template: np.ndarray, xc: np.ndarray, yc: np.ndarray) -> float:
    """Energy-weighted mean distance (µm) of a template's channels to its energy centre."""
    energy = (np.asarray(template, dtype=np.float64) ** 2).sum(axis=0)
    if not energy.any():
        return float("inf")
    energy[energy < ENERGY_FLOOR * energy.max()] = 0.0
    w = energy / energy.sum()
    xm, ym = w @ xc, w @ yc
    return float(w @ np.hypot(xc - xm, yc - ym))


def _descent_of_cluster(settings: tuple, cluster: tuple) -> tuple[int, ClusterCutoff]:
    """``(label, cluster_cutoff(times, scores, *settings))`` of a ``(label, times, scores)``."""
    label, times, scores = cluster
    return label, cluster_cutoff(times, scores, *settings)


def apply_cutoff(
    times,
    scores,
    labels,
    n_clusters,
    templates,
    xc,
    yc,
    sample_rate,
    Th,
    fcont=0.1,
    R_max=0.05,
    max_spread_um=100.0,
    workers: int = 1,
    duration_s: float | None = None,
    min_unit_spikes: int = 1,
    duplicates_among=None,
    similarity: np.ndarray | None = None,
    fold_sim_min: float = 1.0,
    piece_folds=None,
) -> CutoffResult:
    """Score cutoff and labels of every cluster.

    Clusters are handled a few at a time (:func:`kilosnake.io.streaming.columns_by_label`), so
    ``times``, ``scores`` and ``labels`` may be Zarr arrays, read in blocks. The threshold
    descents run in ``workers`` processes (:func:`kilosnake.runtime.parallel.imap_ordered`; at most
    ``2 * workers`` clusters are read ahead of the result being collected), with the same result
    whatever the number.

    Parameters
    ----------
    times, scores, labels : array (n,)
        Spike times (samples), scores, clusters.
    n_clusters : int
    templates : ndarray (n_clusters, nt0, Nchan)
        Whitened cluster waveforms.
    xc, yc : ndarray (Nchan,)
        Channel positions (µm).
    sample_rate : float
    Th : pair of float
        Score thresholds (``Th[0]`` high, ``Th[1]`` low).
    fcont, R_max, max_spread_um : float
        ``cutoff_fcont``, ``cutoff_R_max``, ``good_max_spread_um``.
    workers : int
        Processes running the threshold descents.
    duration_s : float, optional
        Length of the recording (s), for the reasons of the labels; default: the span of the
        spike times.
    min_unit_spikes : int
        Clusters with fewer kept spikes (and at least one) are labelled ``noise``.
    duplicates_among : callable, optional
        ``duplicates_among(mask)``: the duplicate spikes (:mod:`kilosnake.curation.fold`) among
        those of ``mask``. Asked of every spike before the descent (duplicates are not part of
        any cluster's tests) and again of the spikes the descent kept (a cluster can be a copy
        of another once its low-score spikes are cut); duplicates are never kept.
    similarity : ndarray (n_clusters, n_clusters), optional
        Template similarity, for folding clusters under ``min_unit_spikes`` (no folds without).
    fold_sim_min : float
        Least similarity of a fold.
    piece_folds : callable, optional
        ``piece_folds(keep, cluster_of, n_kept, similarity)``: the folds of pieces of units into
        them (:func:`kilosnake.curation.fold.fold_pieces`), after the folds of small clusters;
        updates ``cluster_of``.
    """
    refr = np.zeros(n_clusters, dtype=bool)
    contamination = np.ones(n_clusters)
    threshold = np.full(n_clusters, float(Th[0]))
    spread = np.array([template_spread(templates[c], xc, yc) for c in range(n_clusters)])

    def no_duplicates(mask):
        return np.zeros(mask.size, bool)

    duplicates_among = duplicates_among or no_duplicates
    duplicate = duplicates_among(np.ones(labels.shape[0], bool))

    def counted(start, rows):
        return rows[~duplicate[start : start + len(rows)]]

    counts = label_counts(((s, counted(s, lab)) for s, lab in blocks(labels)), n_clusters)

    def spike_blocks():
        for (s, lab), (_, t), (_, sc) in zip(blocks(labels), blocks(times), blocks(scores)):
            yield counted(s, lab), {"time": counted(s, t), "score": counted(s, sc)}

    clusters = (
        (c, np.asarray(v["time"], np.float64), v["score"])
        for c, _, v in columns_by_label(spike_blocks, counts)
    )
    settings = (sample_rate, Th[0], Th[1], fcont, R_max)
    tests = {}
    for c, res in imap_ordered(_descent_of_cluster, clusters, workers, inherited=settings):
        refr[c], contamination[c], threshold[c] = (
            res.refractory_good,
            res.contamination,
            res.threshold,
        )
        tests[c] = res
    keep = np.concatenate(
        [np.zeros(0, bool)]
        + [
            (sc > threshold[np.asarray(lab, np.int64)]) & ~duplicate[s : s + len(lab)]
            for (s, lab), (_, sc) in zip(blocks(labels), blocks(scores))
        ]
    )
    later = duplicates_among(keep)
    keep &= ~later
    duplicate |= later
    n_kept = kept_counts(labels, keep, n_clusters)
    cluster_of = np.arange(n_clusters, dtype=np.int64)
    folds = []
    if similarity is not None:
        sim = np.array(similarity, dtype=np.float64, copy=True)
        np.fill_diagonal(sim, 0.0)
        own_kept = n_kept
        folds = fold_small_clusters(cluster_of, n_kept, sim, min_unit_spikes, fold_sim_min)
        n_kept = np.bincount(cluster_of, weights=own_kept, minlength=n_clusters).astype(np.int64)
        if piece_folds is not None:
            pieces = piece_folds(keep, cluster_of, n_kept, sim)
            folds += [(j, target, s, PIECE) for j, target, s in pieces]
            n_kept = np.bincount(cluster_of, weights=own_kept, minlength=n_clusters)
            n_kept = n_kept.astype(np.int64)
    noise = (n_kept > 0) & (n_kept < min_unit_spikes)
    live = cluster_of == np.arange(n_clusters)  # folded clusters keep no spikes of their own
    good = refr & (spread < max_spread_um) & ~noise & live
    logger.info(
        "cutoff: %d of %d spikes kept; %d good and %d noise clusters of %d with spikes",
        keep.sum(),
        keep.size,
        good.sum(),
        noise.sum(),
        np.count_nonzero(n_kept),
    )
    if duration_s is None:
        duration_s = _span_s(times, sample_rate)
    empty = ClusterCutoff(float(Th[0]), 1.0, False)
    folded = {fold[0]: fold[1:] for fold in folds}
    reasons = [
        fold_reason(*folded[c])
        if c in folded
        else label_reason(
            tests.get(c, empty),
            counts[c],
            spread[c],
            duration_s,
            fcont,
            R_max,
            max_spread_um,
            n_kept[c],
            min_unit_spikes,
        )
        for c in range(n_clusters)
    ]
    return CutoffResult(
        keep,
        good,
        noise,
        refr,
        contamination,
        threshold,
        spread,
        reasons,
        cluster_of,
        folds,
        duplicate,
        n_kept,
    )


#: the fourth item of a fold of a piece of a unit (:func:`kilosnake.curation.fold.fold_pieces`)
PIECE = "piece"


def fold_reason(target: int, similarity: float, kind: str = "small") -> str:
    """The label reason of a cluster folded into another."""
    why = "a piece of it, no refractory collisions" if kind == PIECE else "too few spikes"
    return f"folded into cluster {target} ({why}; template similarity {similarity:.2f})"


def kept_counts(labels, keep: np.ndarray, n_clusters: int) -> np.ndarray:
    """Kept spikes per cluster (``labels`` read in blocks)."""
    n_kept = np.zeros(n_clusters, np.int64)
    for start, lab in blocks(labels):
        kept = np.asarray(lab, np.int64)[keep[start : start + lab.size]]
        n_kept += np.bincount(kept, minlength=n_clusters)[:n_clusters]
    return n_kept


class SpikeColumns:
    """The per-spike columns the cluster-level checks of :func:`apply_cutoff` need (times,
    clusters after merges and splits, amplitudes), read once, whole; their
    :meth:`duplicates_among` and :meth:`piece_folds` are handed to :func:`apply_cutoff`."""

    def __init__(self, times, labels, amplitudes, n_clusters: int, sample_rate: float, params):
        self.times = np.asarray(times[...], dtype=np.int64)
        self.labels = np.asarray(labels[...], dtype=np.int64)
        self.amplitudes = np.asarray(amplitudes[...], dtype=np.float64)
        self.n_clusters = n_clusters
        self.params = params
        self.window = int(round(params["duplicate_spike_ms"] * 1e-3 * sample_rate))
        self.refractory = max(int(round(REFRACTORY_S * sample_rate)), 1)
        self.baseline = int(round(PIECE_BASELINE_S * sample_rate))

    def duplicates_among(self, mask: np.ndarray) -> np.ndarray:
        """Duplicate spikes (:func:`kilosnake.curation.fold.duplicate_spikes`) among ``mask``."""
        rows = np.flatnonzero(mask)
        found = duplicate_spikes(
            self.times[rows],
            self.labels[rows],
            self.n_clusters,
            self.window,
            self.params["duplicate_fraction"],
            self.amplitudes[rows],
        )
        duplicate = np.zeros(mask.size, bool)
        duplicate[rows[found]] = True
        return duplicate

    def piece_folds(self, keep, cluster_of, n_kept, similarity) -> list:
        """Folds of pieces of units (:func:`kilosnake.curation.fold.fold_pieces`) among the
        kept spikes, each cluster's spikes counted in the cluster they end in."""
        rows = np.flatnonzero(keep)
        group = np.asarray(cluster_of, dtype=np.int64)[self.labels[rows]]
        by_group = np.argsort(group, kind="stable")  # time order kept within a cluster
        starts = np.searchsorted(group[by_group], np.arange(self.n_clusters + 1))
        trains = {
            int(c): self.times[rows[by_group[starts[c] : starts[c + 1]]]]
            for c in np.flatnonzero(np.diff(starts))
        }
        return fold_pieces(
            cluster_of,
            n_kept,
            similarity,
            trains,
            self.params["fold_sim_min"],
            self.params["piece_max_fraction"],
            self.params["piece_max_coincidence"],
            self.params["piece_time_separation"],
            self.refractory,
            self.baseline,
        )


def _span_s(times, sample_rate: float) -> float:
    """Seconds from the first to the last spike (0 without spikes)."""
    lo, hi = np.inf, -np.inf
    for _, t in blocks(times):
        if len(t):
            lo, hi = min(lo, float(np.min(t))), max(hi, float(np.max(t)))
    return (hi - lo) / sample_rate if hi > lo else 0.0


def write_cutoff_store(out, result: CutoffResult, params: dict) -> None:
    """Write ``cutoff.zarr`` (see the module docstring)."""
    n_clusters = result.good.size
    folds = result.folds
    attrs = {
        "n_clusters": int(n_clusters),
        "n_good": int(result.good.sum()),
        "n_noise": int(result.noise.sum()),
        "n_folds": len(folds),
        "n_duplicates": int(result.duplicate.sum()),
        "label_reason": list(result.reasons),  # why each cluster is good or mua
    }
    with writing_store(out, "cutoff", params, "cpu", params.get("seed"), attrs=attrs) as g:
        chunks = (max(1, min(SPIKE_CHUNK, result.keep.size)),)
        write_array(g, "keep", result.keep, chunks=chunks)
        write_array(g, "duplicate", result.duplicate, chunks=chunks)
        write_array(g, "good", result.good)
        write_array(g, "noise", result.noise)
        write_array(g, "refractory_good", result.refractory_good)
        write_array(g, "contamination", result.contamination.astype(np.float64))
        write_array(g, "threshold", result.threshold.astype(np.float64))
        write_array(g, "spread_um", result.spread_um.astype(np.float64))
        write_array(g, "n_kept", result.n_kept.astype(np.int64))
        write_array(g, "cluster_of", result.cluster_of.astype(np.uint32))
        write_array(g, "folds", np.array([f[:2] for f in folds], dtype=np.uint32).reshape(-1, 2))
        write_array(g, "fold_similarity", np.array([f[2] for f in folds], dtype=np.float32))


def run_cutoff(
    spikes_zarr,
    split_zarr,
    whitening_zarr,
    input_json,
    params: dict,
    Th,
    out,
    workers: int = 1,
) -> CutoffResult:
    """The ``cutoff`` stage: score cutoff and labels → ``cutoff.zarr``.

    Parameters
    ----------
    spikes_zarr, split_zarr, whitening_zarr : path
        Final-pass spikes (times, scores), split labels and templates, probe geometry.
    input_json : path
        The recording description (sample rate).
    params : dict
        Resolved ``cutoff`` parameters.
    Th : pair of float
        Score thresholds of the sort (``Th[0]`` starts the descent, ``Th[1]`` ends it).
    out : path
        ``cutoff.zarr`` to write.
    workers : int
        Processes running the per-cluster threshold descents at most (one per
        ``SPIKES_PER_WORKER`` spikes; the same output whatever the number).
    """
    g = open_store(spikes_zarr)
    times, scores = g["time"], g["score"]
    sg = open_store(split_zarr)
    labels = sg["cluster"]
    if labels.shape[0] != times.shape[0]:
        raise ValueError(
            f"{split_zarr} labels {labels.shape[0]} spikes, {spikes_zarr} {times.shape[0]}"
        )
    templates = np.asarray(sg["templates"][...], dtype=np.float32)
    geom = read_probe_geometry(whitening_zarr)
    info = read_input_json(input_json)
    sample_rate = float(info["sample_rate"])
    if labels.shape[0] == 0:
        logger.warning("no spikes found: no cutoff to set; cutoff.zarr is written empty")
    n_clusters = int(sg.attrs["n_clusters"])
    columns = SpikeColumns(times, labels, g["amplitude"], n_clusters, sample_rate, params)
    result = apply_cutoff(
        times,
        scores,
        labels,
        n_clusters,
        templates,
        geom["xc"],
        geom["yc"],
        sample_rate,
        Th,
        params["cutoff_fcont"],
        params["cutoff_R_max"],
        params["good_max_spread_um"],
        workers_for(labels.shape[0], workers),
        info.get("duration_s"),
        params["min_unit_spikes"],
        columns.duplicates_among,
        np.asarray(sg["similar_templates"][...], dtype=np.float64),
        params["fold_sim_min"],
        columns.piece_folds,
    )
    write_cutoff_store(out, result, {**params, "Th": list(Th)})
    return result
