"""Clusters that are not units: duplicate spikes and small clusters folded into similar units.

Duplicate spikes
----------------
The final pass sometimes matches one event twice, with two templates (the second on what the first
left, or fitted to one phase of the waveform a fraction of a millisecond early or late); the copy
then forms a cluster whose spikes nearly all coincide with another cluster's. Every pair of spikes
of different clusters at most ``duplicate_spike_ms`` apart is a coincidence. A cluster whose
coinciding spikes make up at least ``duplicate_fraction`` of its spikes is a copy of the other
cluster, unless that holds for the other cluster as well and it is the weaker of the two (lower
median spike amplitude, the template scaling of unit-norm templates: the second fit of an event is
the weaker one; ties: fewer spikes, then the higher id). A copy's coinciding spikes are marked as
duplicates (on the clusters after merges and splits); the cutoff stage leaves them out and the
other cluster keeps the event.
Independent neurons fire within a millisecond or two of each other for a few per cent of their
spikes, never for most of them, so true neighbours keep all their spikes.

Folds
-----
After the score cutoff (cutoff stage), a cluster with fewer than ``min_unit_spikes`` kept spikes is
too small to be tested (no correlogram of so few spikes can show a refractory dip) and too small to
be a unit; it is most often a fragment of a unit that template learning spawned several times. Such
clusters are visited in ascending order of size; one still below ``min_unit_spikes`` when visited
is folded into the live cluster (one with spikes, itself excluded) whose template is most similar
to its own, when that similarity is at least ``fold_sim_min``. The target grows by the folded
spikes, so the fragments of one unit gather into one cluster. A small cluster with no template
similar enough stays as it is, and the cutoff stage labels it ``noise``.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def coincident_pairs(times: np.ndarray, clusters: np.ndarray, window: int):
    """Indices ``(i, k)`` of the spike pairs of different clusters at most ``window`` samples
    apart (``times`` sorted)."""
    times = np.asarray(times, dtype=np.int64)
    first, second = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for lag in range(1, times.size):
        close = np.flatnonzero(times[lag:] - times[:-lag] <= window)
        if close.size == 0:
            break
        other = close + lag
        differ = clusters[close] != clusters[other]
        first.append(close[differ])
        second.append(other[differ])
    return np.concatenate(first), np.concatenate(second)


def duplicate_spikes(
    times: np.ndarray,
    clusters: np.ndarray,
    n_clusters: int,
    window: int,
    min_fraction: float,
    amplitudes: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of the spikes that repeat a spike of a larger cluster (see the module docstring).

    Parameters
    ----------
    times : ndarray of int, shape (n,)
        Spike times (samples), in any order.
    clusters : ndarray of int, shape (n,)
        Cluster of every spike.
    n_clusters : int
    window : int
        Largest time difference (samples) of a coincidence.
    min_fraction : float
        Least fraction of the copy's spikes that must coincide with the other's.
    amplitudes : ndarray of float, shape (n,), optional
        Spike amplitudes (template scaling); without them, when both clusters are
        mostly copies of each other, the smaller is.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    order = np.argsort(np.asarray(times), kind="stable")
    clusters = np.asarray(clusters, dtype=np.int64)[order]
    duplicate = np.zeros(clusters.size, bool)  # in the order given
    i, k = coincident_pairs(np.asarray(times)[order], clusters, window)
    if i.size == 0:
        return duplicate
    sizes = np.bincount(clusters, minlength=n_clusters)
    rank = weakness_rank(clusters, sizes, n_clusters, amplitudes, order)
    # (spike, cluster it coincides with), each spike once per partner, on both sides
    spike_pair = np.unique(
        np.concatenate([i * n_clusters + clusters[k], k * n_clusters + clusters[i]])
    )
    spike, partner = np.divmod(spike_pair, n_clusters)
    directed = clusters[spike] * n_clusters + partner
    codes, n_coincident = np.unique(directed, return_counts=True)
    high = dict(zip(codes.tolist(), (n_coincident >= min_fraction * sizes[codes // n_clusters])))
    copies = [
        code
        for code, own_high in high.items()
        if own_high and is_the_copy(code, n_clusters, high, rank)
    ]
    copies = np.array(copies, dtype=np.int64)
    duplicate[order[spike[np.isin(directed, copies)]]] = True
    for code in copies:
        logger.debug(
            "cluster %d: spikes coinciding with cluster %d are duplicates",
            code // n_clusters,
            code % n_clusters,
        )
    logger.info(
        "%d duplicate spikes in %d clusters repeating another cluster's",
        duplicate.sum(),
        np.unique(copies // n_clusters).size,
    )
    return duplicate


def is_the_copy(code: int, n_clusters: int, high: dict, rank: np.ndarray) -> bool:
    """Whether cluster ``x`` of the directed pair ``code = x * n + y``, most of whose spikes
    coincide with ``y``'s, is the copy: yes unless most of ``y``'s spikes coincide with ``x``'s
    too and ``y`` is the weaker of the two."""
    x, y = divmod(code, n_clusters)
    return not high.get(y * n_clusters + x, False) or rank[x] < rank[y]


def weakness_rank(clusters, sizes, n_clusters, amplitudes, order) -> np.ndarray:
    """Rank of each cluster from weakest (0) to strongest: median spike amplitude (when given),
    then spike count, then the lower id is the stronger."""
    median = np.zeros(n_clusters)
    if amplitudes is not None:
        amp = np.asarray(amplitudes, dtype=np.float64)[order]
        by_cluster = np.argsort(clusters, kind="stable")
        starts = np.searchsorted(clusters[by_cluster], np.arange(n_clusters))
        for c in np.flatnonzero(sizes):
            median[c] = np.median(amp[by_cluster[starts[c] : starts[c] + sizes[c]]])
    ids = np.arange(n_clusters)
    weakest_first = np.lexsort((-ids, sizes, median))
    rank = np.empty(n_clusters, np.int64)
    rank[weakest_first] = np.arange(n_clusters)
    return rank


def fold_small_clusters(
    template_cluster: np.ndarray,
    sizes: np.ndarray,
    similarity: np.ndarray,
    min_spikes: int,
    sim_min: float,
) -> list:
    """Fold clusters smaller than ``min_spikes`` into their most similar live cluster (see the
    module docstring).

    Parameters
    ----------
    template_cluster : ndarray of int, shape (Nfilt,)
        Cluster of each template's spikes; updated in place. Cluster ids are template ids.
    sizes : ndarray of int, shape (Nfilt,)
        Spikes per cluster (duplicates not counted).
    similarity : ndarray, shape (Nfilt, Nfilt)
        Template similarity, diagonal 0.
    min_spikes : int
        ``min_unit_spikes``.
    sim_min : float
        ``fold_sim_min``.

    Returns
    -------
    list of (cluster folded away, target cluster, similarity), in order.
    """
    sizes = np.array(sizes, dtype=np.int64, copy=True)
    folds = []
    for j in np.argsort(sizes, kind="stable"):
        if not 0 < sizes[j] < min_spikes:
            continue
        live = np.flatnonzero(sizes > 0)
        live = live[live != j]
        if live.size == 0:
            break
        sims = similarity[j, live]
        best = int(np.argmax(sims))  # ties: the lowest cluster id
        if sims[best] < sim_min:
            continue
        target = int(live[best])
        template_cluster[template_cluster == j] = target
        sizes[target] += sizes[j]
        sizes[j] = 0
        folds.append((int(j), target, float(sims[best])))
        logger.debug("fold %d -> %d (similarity %.3f)", j, target, sims[best])
    logger.info("%d clusters under %d spikes folded into similar units", len(folds), min_spikes)
    return folds
