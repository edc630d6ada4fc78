"""Merges: templates that are one neuron (Kilosort 2.5's ``find_merges``).

Templates are visited in ascending order of spike count. For template ``j`` the candidates are
the templates visited after it (at least as many spikes), ranked by decreasing similarity
(``similar_templates[j]``, diagonal ignored); for each candidate with similarity
``>= merge_sim_min`` the cross-correlogram of the two current spike trains is tested
(:mod:`kilosnake.curation.ccg`). When it shows a refractory dip (``Q < merge_Q_max`` and
``R < merge_R_max``) every spike labelled ``j`` (its own and those merged into it before) is
relabelled to the candidate and the search for ``j`` stops. Templates are not recomputed and the
similarity matrix is not updated. Cluster ids are template ids: a merged-away template keeps its id
and ends with no spikes. Duplicate spikes and clusters too small to be units are dealt with after
the splits, by the cutoff stage (:mod:`kilosnake.curation.fold`).

The stage writes ``merge.zarr``:

* ``cluster`` (nspk,) uint32: cluster of every spike after merges;
* ``template_cluster`` (Nfilt,) uint32: cluster each template's spikes went to;
* ``merges`` (n_merges, 2) uint32: (template merged away, cluster it joined), in order;
* ``merge_similarity`` (n_merges,) float32: similarity of the pair;
* ``merge_Q``, ``merge_R`` (n_merges,) float64: correlogram Q and R of the pair when merged.

Attributes: ``n_clusters`` (= Nfilt), ``n_merges``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from kilosnake.curation.ccg import refractory_stats
from kilosnake.curation.data import open_spikes, read_feature_indices
from kilosnake.io.input_json import read_input_json
from kilosnake.io.store import write_array, writing_store
from kilosnake.io.streaming import blocks, columns_by_label, label_counts

logger = logging.getLogger(__name__)

#: spikes per chunk of the per-spike label array
SPIKE_CHUNK = 1 << 20


@dataclasses.dataclass
class MergeResult:
    """Where each template's spikes went, and the merges taken (in order)."""

    template_cluster: np.ndarray  # (Nfilt,) int64
    merges: list  # [(template j, target cluster, similarity, Q, R)]

    def spike_clusters(self, spike_templates: np.ndarray) -> np.ndarray:
        """The cluster of every spike."""
        return self.template_cluster[np.asarray(spike_templates, dtype=np.int64)]


def visiting_order(counts: np.ndarray) -> np.ndarray:
    """Templates in ascending spike count (ties by id)."""
    return np.argsort(counts, kind="stable")


def ranked_candidates(
    j: int, later: np.ndarray, similarity: np.ndarray, sim_min: float
) -> np.ndarray:
    """Templates of ``later`` similar enough to ``j``, most similar first (ties by visit order)."""
    sims = similarity[j, later]
    ok = (sims >= sim_min) & (later != j)
    cand, sims = later[ok], sims[ok]
    return cand[np.argsort(-sims, kind="stable")]


def find_merges(
    times: np.ndarray,
    templates: np.ndarray,
    similarity: np.ndarray,
    sample_rate: float,
    sim_min: float = 0.5,
    Q_max: float = 0.2,
    R_max: float = 0.05,
) -> MergeResult:
    """Decide which templates to merge.

    Only the spike times are held (one train per template); ``times`` and ``templates`` may be
    Zarr arrays, read in blocks.

    Parameters
    ----------
    times : array of uint64, shape (n,)
        Spike times in samples, sorted.
    templates : array of int, shape (n,)
        Template of each spike.
    similarity : ndarray, shape (Nfilt, Nfilt)
        Template similarity (``similar_templates``).
    sample_rate : float
        Hz.
    sim_min, Q_max, R_max : float
        ``merge_sim_min``, ``merge_Q_max``, ``merge_R_max``.

    Returns
    -------
    MergeResult
    """
    n_templates = similarity.shape[0]
    sim = np.array(similarity, dtype=np.float64, copy=True)
    np.fill_diagonal(sim, 0.0)
    trains = trains_by_template(times, templates, n_templates)
    label = np.arange(n_templates, dtype=np.int64)
    order = visiting_order(np.array([t.size for t in trains.values()], dtype=np.int64))
    merges = []
    for pos, j in enumerate(order):
        if trains[j].size == 0:
            continue
        for c in ranked_candidates(j, order[pos + 1 :], sim, sim_min):
            if trains[c].size == 0:
                continue
            st = refractory_stats(trains[j], trains[c], sample_rate)
            if st.Q < Q_max and st.R < R_max:
                label[label == j] = c
                trains[c] = np.sort(np.concatenate([trains[c], trains[j]]))
                trains[j] = trains[j][:0]
                merges.append((int(j), int(c), float(sim[j, c]), st.Q, st.R))
                logger.debug(
                    "merge %d -> %d (similarity %.3f, Q %.3f, R %.3g)", j, c, sim[j, c], st.Q, st.R
                )
                break
    logger.info("%d merges among %d templates", len(merges), n_templates)
    return MergeResult(label, merges)


def trains_by_template(times, templates, n_templates: int) -> dict:
    """``{template: spike times (float64, sorted)}`` of every template, read in blocks."""
    counts = label_counts(blocks(templates), n_templates)

    def spike_blocks():
        for (_, t), (_, tpl) in zip(blocks(times), blocks(templates)):
            yield tpl, {"time": t}

    trains = {i: np.zeros(0, np.float64) for i in range(n_templates)}
    for label, _, columns in columns_by_label(spike_blocks, counts):
        trains[label] = columns["time"].astype(np.float64)
    return trains


def write_merge_store(out, result: MergeResult, spike_templates, params: dict) -> None:
    """Write ``merge.zarr`` (see the module docstring); ``spike_templates`` is read in
    blocks."""
    m = result.merges
    n = int(spike_templates.shape[0])
    with writing_store(
        out,
        "merge",
        params,
        "cpu",
        params.get("seed"),
        attrs={"n_clusters": int(result.template_cluster.size), "n_merges": len(m)},
    ) as g:
        clusters = g.create_array(
            "cluster",
            shape=(n,),
            dtype=np.uint32,
            chunks=(max(1, min(SPIKE_CHUNK, n)),),
            fill_value=0,
        )
        for start, tpl in blocks(spike_templates, SPIKE_CHUNK):
            clusters[start : start + tpl.size] = result.spike_clusters(tpl).astype(np.uint32)
        write_array(g, "template_cluster", result.template_cluster.astype(np.uint32))
        write_array(g, "merges", np.array([r[:2] for r in m], dtype=np.uint32).reshape(-1, 2))
        write_array(g, "merge_similarity", np.array([r[2] for r in m], dtype=np.float32))
        write_array(g, "merge_Q", np.array([r[3] for r in m], dtype=np.float64))
        write_array(g, "merge_R", np.array([r[4] for r in m], dtype=np.float64))


def run_merge(spikes_zarr, input_json, params: dict, out) -> MergeResult:
    """The ``merge`` stage: read spikes.zarr, decide merges, write ``merge.zarr``.

    Parameters
    ----------
    spikes_zarr : path
        Output of the final pass.
    input_json : path
        The recording description (sample rate).
    params : dict
        Resolved ``merge`` parameters (``merge_sim_min``, ``merge_Q_max``, ``merge_R_max``).
    out : path
        ``merge.zarr`` to write.
    """
    spikes = open_spikes(spikes_zarr)
    similarity = read_feature_indices(spikes_zarr)["similar_templates"]
    sample_rate = float(read_input_json(input_json)["sample_rate"])
    logger.info("merge: %d spikes, %d templates", spikes.n_spikes, spikes.n_templates)
    if spikes.n_spikes == 0:
        logger.warning("no spikes found: nothing to merge; merge.zarr is written empty")
    result = find_merges(
        spikes.time,
        spikes.template,
        similarity,
        sample_rate,
        params["merge_sim_min"],
        params["merge_Q_max"],
        params["merge_R_max"],
    )
    write_merge_store(out, result, spikes.template, params)
    return result
