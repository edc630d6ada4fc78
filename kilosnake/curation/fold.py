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

Pieces
------
A neuron can also end in two clusters that are too large to fold by size:

* *a second template.* Template learning can give one neuron a second template, most often for
  its weaker, reshaped spikes (a bursting cell's spikes shrink and widen within a burst); the
  second cluster is too small for the correlogram tests of the merge stage to reach
  significance;
* *before and after drift.* A unit whose waveform changed as the probe moved can be cut in time
  into two clusters that each cover a range of the displacement (they fire at different times).

A live cluster B is folded into the most similar live cluster A (similarity at least
``fold_sim_min``, at least B's size) for which B is a small piece of A (B and the small pieces A
took already at most ``piece_max_fraction`` of A's own kept spikes, so a unit gains at most that
fraction of spikes by mistake) or the two fire at different times (their firing profiles over the
recording differ by at least ``piece_time_separation``,
:func:`kilosnake.curation.ccg.time_separation`; B the smaller), provided the spikes of the two
respect one refractory period: the pairs of B's and A's spikes within the refractory period (``O``)
are at most ``piece_max_coincidence`` times the number expected from A's spikes around B's (``E``,
from the lags between the refractory period and 50 ms on both sides, scaled to the refractory
window). Two neurons firing independently collide about ``E`` times; one neuron never collides with
itself. Clusters are visited smallest first, so pieces gather into the unit. A true small unit
beside a large one with a similar template passes only if it collides with it less than
``piece_max_coincidence * E`` times: rarely when ``E`` is a few collisions or more (for ``E = 3``,
about one time in twenty), often when the two seldom overlap in time; the cost of that error is a
few per cent of spikes added to the large unit, against a false unit per piece.
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.curation.ccg import time_separation

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


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (``np.unique``; by sorting: NumPy 2's hashing ``np.unique``
    takes 100 times longer on millions of mostly distinct integers)."""
    ordered = np.sort(np.asarray(values), kind="stable")
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered


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
    spike_pair = distinct(
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


def fold_into(cluster_of, sizes, cluster: int, target: int, similarity: float) -> tuple:
    """Move ``cluster``'s spikes (and those folded into it) to ``target``: ``cluster_of`` and
    ``sizes`` updated in place; returns the fold ``(cluster, target, similarity)``."""
    cluster_of[cluster_of == cluster] = target
    sizes[target] += sizes[cluster]
    sizes[cluster] = 0
    return cluster, target, similarity


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
        folds.append(fold_into(template_cluster, sizes, int(j), target, float(sims[best])))
        logger.debug("fold %d -> %d (similarity %.3f)", j, target, sims[best])
    logger.info("%d clusters under %d spikes folded into similar units", len(folds), min_spikes)
    return folds


#: half width of the lags around a piece's spikes that give the target's local rate (s)
PIECE_BASELINE_S = 0.05


def coincidences(piece_times: np.ndarray, unit_times: np.ndarray, window: int, baseline: int):
    """``(O, E)``: pairs of a ``piece_times`` spike and a ``unit_times`` spike (sorted) at most
    ``window`` samples apart, and the number expected from ``unit_times``' spikes at lags between
    ``window`` and ``baseline`` on both sides (scaled to the ``2 * window`` central width)."""
    piece_times = np.asarray(piece_times, dtype=np.int64)
    unit_times = np.asarray(unit_times, dtype=np.int64)

    def within(lag: int) -> np.ndarray:
        return np.searchsorted(unit_times, piece_times + lag, side="right") - np.searchsorted(
            unit_times, piece_times - lag, side="left"
        )

    central = int(within(window).sum())
    shoulders = int(within(baseline).sum()) - central
    return central, shoulders * window / max(baseline - window, 1)


def fold_pieces(
    cluster_of: np.ndarray,
    n_kept: np.ndarray,
    similarity: np.ndarray,
    trains: dict,
    sim_min: float,
    max_fraction: float,
    max_coincidence: float,
    min_separation: float,
    window: int,
    baseline: int,
) -> list:
    """Fold pieces of units into them (see the module docstring).

    Parameters
    ----------
    cluster_of : ndarray of int, shape (Nfilt,)
        Cluster each template's spikes end in; updated in place.
    n_kept : ndarray of int, shape (Nfilt,)
        Kept spikes of each live cluster (its folded clusters included).
    similarity : ndarray, shape (Nfilt, Nfilt)
        Template similarity, diagonal 0.
    trains : dict
        Kept spike times (sorted) of each live cluster; updated in place.
    sim_min, max_fraction, max_coincidence, min_separation : float
        ``fold_sim_min``, ``piece_max_fraction``, ``piece_max_coincidence``,
        ``piece_time_separation``.
    window, baseline : int
        Refractory period and :data:`PIECE_BASELINE_S`, in samples.

    Returns
    -------
    list of (piece folded away, target cluster, similarity), in order.
    """
    sizes = np.array(n_kept, dtype=np.int64, copy=True)
    absorbed = np.zeros_like(sizes)  # spikes of small pieces folded into each cluster so far
    folds = []
    for b in np.argsort(sizes, kind="stable"):
        if sizes[b] == 0 or cluster_of[b] != b:
            continue
        target = piece_target(
            b, sizes, absorbed, similarity, trains, sim_min, max_fraction, min_separation
        )
        if target is None:
            continue
        seen, expected = coincidences(trains[b], trains[target], window, baseline)
        if seen > max_coincidence * expected:
            continue
        if small_piece(b, target, sizes, absorbed, max_fraction):  # not a part cut in time
            absorbed[target] += sizes[b]
        trains[target] = np.sort(np.concatenate([trains[target], trains.pop(b)]), kind="stable")
        folds.append(fold_into(cluster_of, sizes, int(b), target, float(similarity[b, target])))
        logger.debug(
            "piece %d -> %d (similarity %.3f, %d coincidences, %.1f expected)",
            b, target, similarity[b, target], seen, expected,
        )  # fmt: skip
    logger.info("%d pieces of units folded into them", len(folds))
    return folds


def piece_target(b, sizes, absorbed, similarity, trains, sim_min, max_fraction, min_separation):
    """The live cluster most similar to ``b`` (at least ``sim_min``) that ``b`` could be a piece
    of: one ``b`` is a small piece of (with the small pieces it took already, at most
    ``max_fraction`` of its own spikes), or a larger one firing at other times; else None."""
    live = np.flatnonzero(sizes > 0)
    live = live[(live != b) & (sizes[live] >= sizes[b])]
    for a in live[np.argsort(-similarity[b, live], kind="stable")]:
        if similarity[b, a] < sim_min:
            return None
        if (
            small_piece(b, a, sizes, absorbed, max_fraction)
            or time_separation(trains[b], trains[a]) >= min_separation
        ):
            return int(a)
    return None


def small_piece(b, a, sizes, absorbed, max_fraction) -> bool:
    """Whether ``b``, with the small pieces ``a`` took already, is at most ``max_fraction`` of
    ``a``'s own spikes."""
    return absorbed[a] + sizes[b] <= max_fraction * (sizes[a] - absorbed[a])
