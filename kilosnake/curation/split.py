"""Splits: clusters whose PC features are bimodal (Kilosort 2.5's "bimodal pursuit").

Clusters are visited in id order, including those created on the way. For a cluster with at
least ``split_min_spikes`` spikes:

1. its PC features (``nPCs x C`` per spike, carried onto the channel list of the cluster's own
   template when merged spikes came from other templates) are flattened and centred;
2. the projection ``x`` on the top right singular vector is modelled by a mixture of two
   Gaussians (EM, 50 iterations, started from the points below / above the mean); from the 11th
   iteration on, every other iteration, the direction itself is re-estimated as the one that best
   separates the two components
   (``w = (Xᵀ diag(r1/s1 + r2/s2) X)⁻¹ Xᵀ (r1 μ1/s1 + r2 μ2/s2)``, normalised);
3. spikes with ``r1 > r2`` form the "low" half; the split is accepted when the smaller half holds
   more than ``split_min_fraction`` of the spikes, both halves have at least ``split_min_spikes``,
   and the mean confidence of each half (``mean r1`` over the low half, ``mean r2`` over the other)
   exceeds ``AUCsplit``;
4. unless vetoed: by the halves' cross-correlogram (``Q < split_veto_Q`` and ``R < split_veto_R``:
   both halves respect one refractory period, so they are one neuron), by time (the halves'
   firing profiles over 20 bins of the recording overlap less than ``1 -
   split_veto_time_separation``, :func:`time_separation`: one unit whose features changed as the
   probe moved, cut into before and after, where two neurons would both fire throughout), or by
   their mean waveforms
   (mean PC features mapped back to waveforms with ``wPCA``; correlation above
   ``split_veto_corr`` and relative norm difference ``2 |‖c1‖ - ‖c2‖| / (‖c1‖ + ‖c2‖)`` below
   ``split_veto_ampdiff``).

An accepted split moves the low half to a new cluster id (appended after the existing ones) and
re-tests the cluster. The new cluster inherits the channel and template lists of its parent
(its spikes' features were computed on them), the parent's row of ``similar_templates`` (and a
similarity of 1 with its parent); both halves get as template their mean waveform (unit norm,
whitened), built from the mean PC features on the parent's channels.

The stage writes ``split.zarr``:

* ``cluster`` (nspk,) uint32: cluster of every spike after merges and splits;
* ``parent`` (n_clusters,) int64: cluster a cluster was split from, or -1;
* ``source_template`` (n_clusters,) uint32: template whose channel / template lists apply;
* ``templates`` (n_clusters, nt0, Nchan) float32: unit-norm whitened waveform per cluster;
* ``similar_templates`` (n_clusters, n_clusters) float32: similarity (split siblings = 1);
* ``pc_feature_ind`` (n_clusters, C) uint32: channels of each cluster's PC features;
* ``template_feature_ind`` (n_clusters, K) uint32: templates of its template features.

Attributes: ``n_clusters``, ``n_splits``, ``nt0``, ``nt0min``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from kilosnake.curation.ccg import refractory_stats, time_separation
from kilosnake.curation.data import (
    StoreMismatchError,
    check_template_counts,
    members_by_label,
    open_spikes,
    read_feature_indices,
    read_templates,
    remap_columns,
)
from kilosnake.io.input_json import read_input_json
from kilosnake.io.store import open_store, write_array, writing_store
from kilosnake.io.streaming import read_rows
from kilosnake.runtime.parallel import WorkerPool, workers_for

logger = logging.getLogger(__name__)

#: EM iterations of the 1-D two-Gaussian fit
EM_ITERATIONS = 50
#: iteration (0-based) from which the projection direction is re-estimated, every other one
DIRECTION_FROM = 10
SPIKE_CHUNK = 1 << 20
#: rows of PC features read at once when gathering a cluster's features
FEATURE_ROWS = 1 << 14
#: spikes per block of the weighted Gram matrix of the separating direction
GRAM_ROWS = 1 << 14
#: per-spike arrays up to this size are read into memory once (each cluster's rows then cost
#: no reading); larger ones are read by rows, cluster by cluster, so memory stays bounded. Reading
#: by rows decompresses every chunk a cluster's spikes fall in, nearly all of them for each
#: cluster (3.8x slower on 105k spikes, growing with the spike count), hence a generous limit:
#: 2 GiB holds the features of about 5.6 million spikes (1.5 h of a Neuropixels probe)
IN_MEMORY_BYTES = 2 << 30


@dataclasses.dataclass
class SplitSettings:
    """The ``split`` parameters of the table."""

    AUCsplit: float = 0.9
    min_spikes: int = 300
    min_fraction: float = 0.05
    veto_Q: float = 0.25
    veto_R: float = 0.05
    veto_corr: float = 0.9
    veto_ampdiff: float = 0.2
    veto_time_separation: float = 1.0

    @classmethod
    def from_params(cls, p: dict) -> SplitSettings:
        return cls(
            p["AUCsplit"],
            int(p["split_min_spikes"]),
            p["split_min_fraction"],
            p["split_veto_Q"],
            p["split_veto_R"],
            p["split_veto_corr"],
            p["split_veto_ampdiff"],
            p["split_veto_time_separation"],
        )


@dataclasses.dataclass
class Bimodality:
    """Outcome of the two-Gaussian fit of one cluster."""

    low: np.ndarray  # (n,) bool: spikes of the "low" component
    p_low: float  # mean responsibility of the low component over its spikes
    p_high: float
    fraction: float  # fraction of spikes in the smaller half


# --------------------------------------------------------------------------------------------
# the bimodality test


def top_direction(x: np.ndarray) -> np.ndarray:
    """Unit vector of largest variance of the centred rows of ``x`` (sign fixed)."""
    _, vecs = np.linalg.eigh(x.T @ x)
    w = vecs[:, -1]
    return w * (1.0 if w[np.argmax(np.abs(w))] >= 0 else -1.0)


def _gauss_loglik(x, mean, var, weight):
    return np.log(weight) - 0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)


def _responsibilities(x, means, variances, weight):
    l1 = _gauss_loglik(x, means[0], variances[0], weight)
    l2 = _gauss_loglik(x, means[1], variances[1], 1.0 - weight)
    r1 = 1.0 / (1.0 + np.exp(np.clip(l2 - l1, -700, 700)))
    return r1, 1.0 - r1


def _m_step(x, r1, r2, floor):
    w1, w2 = max(r1.sum(), 1e-12), max(r2.sum(), 1e-12)
    means = np.array([(r1 * x).sum() / w1, (r2 * x).sum() / w2])
    variances = (
        np.array([(r1 * (x - means[0]) ** 2).sum() / w1, (r2 * (x - means[1]) ** 2).sum() / w2])
        + floor
    )
    weight = float(np.clip(w1 / x.size, 1e-6, 1 - 1e-6))
    return means, variances, weight


def _weighted_gram(clp, v, rows: int = GRAM_ROWS):
    """``(clp * v[:, None]).T @ clp``, summed over blocks of ``rows`` spikes (no n x d copy)."""
    if clp.shape[0] <= rows:
        return (clp * v[:, None]).T @ clp
    out = np.zeros((clp.shape[1], clp.shape[1]))
    for s in range(0, clp.shape[0], rows):
        block = clp[s : s + rows]
        out += (block * v[s : s + rows, None]).T @ block
    return out


def _separating_direction(clp, r1, r2, means, variances):
    n = clp.shape[0]
    v = r1 / variances[0] + r2 / variances[1]
    sts = _weighted_gram(clp, v) / n
    stmu = clp.T @ (r1 * means[0] / variances[0] + r2 * means[1] / variances[1]) / n
    ridge = 1e-9 * max(np.trace(sts), 1e-30) / sts.shape[0]
    w = np.linalg.solve(sts + ridge * np.eye(sts.shape[0]), stmu)
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else None


def fit_bimodality(features: np.ndarray) -> Bimodality | None:
    """Two-Gaussian EM along the best separating direction of ``features`` (n, d).

    Returns None when the features do not vary (nothing to split).
    """
    clp = np.array(features, dtype=np.float64)  # a copy: centred in place
    clp -= clp.mean(axis=0)
    if clp.shape[0] < 2 or not np.any(clp):
        return None
    w = top_direction(clp)
    x = clp @ w
    low = x < x.mean()
    if low.all() or not low.any():
        return None
    floor = 1e-6 * x.var() + 1e-12
    r1 = low.astype(np.float64)
    r2 = 1.0 - r1
    means, variances, weight = _m_step(x, r1, r2, floor)
    for it in range(EM_ITERATIONS):
        r1, r2 = _responsibilities(x, means, variances, weight)
        means, variances, weight = _m_step(x, r1, r2, floor)
        if it >= DIRECTION_FROM and (it - DIRECTION_FROM) % 2 == 0:
            w_new = _separating_direction(clp, r1, r2, means, variances)
            if w_new is not None:
                x = clp @ w_new
    low = r1 > r2
    if low.all() or not low.any():
        return Bimodality(low, 0.0, 0.0, 0.0)
    return Bimodality(
        low, float(r1[low].mean()), float(r2[~low].mean()), float(min(low.mean(), 1.0 - low.mean()))
    )


def accepts_split(b: Bimodality | None, s: SplitSettings) -> bool:
    """Both halves large and confident enough."""
    if b is None:
        return False
    n_low = int(b.low.sum())
    return (
        b.fraction > s.min_fraction
        and min(b.p_low, b.p_high) > s.AUCsplit
        and min(n_low, b.low.size - n_low) >= s.min_spikes
    )


# --------------------------------------------------------------------------------------------
# vetoes


def mean_waveform(features: np.ndarray, wpca: np.ndarray) -> np.ndarray:
    """Mean PC features (n, nPCs, C) mapped back to a waveform (nt0, C)."""
    return wpca[:, : features.shape[1]] @ features.mean(axis=0)


def same_waveform(c1: np.ndarray, c2: np.ndarray, corr_max: float, ampdiff_max: float) -> bool:
    """True when two mean waveforms correlate strongly and have similar norms."""
    a, b = c1.ravel(), c2.ravel()
    n1, n2 = np.linalg.norm(a), np.linalg.norm(b)
    if n1 + n2 == 0:
        return True
    if a.std() == 0 or b.std() == 0:
        return False
    corr = float(np.corrcoef(a, b)[0, 1])
    return corr > corr_max and 2 * abs(n1 - n2) / (n1 + n2) < ampdiff_max


def halves_refractory(t_low, t_high, sample_rate, q_max, r_max) -> bool:
    """True when the two halves' cross-correlogram has a refractory dip (one neuron)."""
    st = refractory_stats(t_low, t_high, sample_rate)
    return st.Q < q_max and st.R < r_max


# --------------------------------------------------------------------------------------------
# the loop


@dataclasses.dataclass
class SplitState:
    """Clusters being split: labels, per-cluster spike lists and per-cluster tables."""

    labels: np.ndarray  # (n,) int64
    members: list  # spike indices per cluster
    source: list  # template whose lists apply
    parent: list
    templates: list  # (nt0, Nchan) float32 unit norm per cluster
    similar: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.members)

    def add_split(self, ik: int, low_idx: np.ndarray, high_idx: np.ndarray, wave_low, wave_high):
        new = self.n_clusters
        self.labels[low_idx] = new
        self.members[ik] = high_idx
        self.members.append(low_idx)
        self.source.append(self.source[ik])
        self.parent.append(ik)
        self.templates[ik] = wave_high
        self.templates.append(wave_low)
        sim = np.zeros((new + 1, new + 1), dtype=self.similar.dtype)
        sim[:new, :new] = self.similar
        sim[new, :new] = self.similar[ik]
        sim[:new, new] = self.similar[:, ik]
        sim[ik, new] = sim[new, ik] = sim[new, new] = 1.0
        self.similar = sim
        return new


def dense_on_channels(wave: np.ndarray, channels: np.ndarray, n_channels: int) -> np.ndarray:
    """A (nt0, C) waveform placed on ``channels`` of an (nt0, Nchan) array, unit norm."""
    out = np.zeros((wave.shape[0], n_channels), dtype=np.float64)
    out[:, channels] = wave
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else out).astype(np.float32)


def cluster_features(pc_features, spike_templates, idx, src: int, pc_feature_ind) -> np.ndarray:
    """PC features (n, nPCs, C) of the spikes ``idx`` on the channel list of template ``src``.

    Spikes found with another template (merged in) are carried onto ``src``'s channels; the
    others are used as read.
    """
    feats = read_rows(pc_features, idx, FEATURE_ROWS)
    found_with = read_rows(spike_templates, idx).astype(np.int64)
    moved = np.flatnonzero(found_with != src)
    if moved.size:
        feats[moved] = remap_columns(
            feats[moved],
            found_with[moved],
            np.full(moved.size, src),
            pc_feature_ind,
            pc_feature_ind,
        )
    return feats


@dataclasses.dataclass
class FeatureSource:
    """What a worker needs to fit a cluster: the per-spike arrays and the split settings."""

    pc_features: object  # (n, nPCs, C) Zarr or NumPy
    spike_templates: object  # (n,)
    pc_feature_ind: np.ndarray
    settings: SplitSettings


def accepted_fit(source: FeatureSource, cluster: tuple) -> Bimodality | None:
    """The bimodality fit of a ``(spike indices, source template)`` cluster when it passes
    :func:`accepts_split`, else None (the vetoes are left to the caller)."""
    idx, src = cluster
    feats = cluster_features(
        source.pc_features, source.spike_templates, idx, src, source.pc_feature_ind
    )
    fit = fit_bimodality(feats.reshape(idx.size, -1))
    return fit if accepts_split(fit, source.settings) else None


def _testable(idx: np.ndarray, s: SplitSettings) -> bool:
    return idx.size >= s.min_spikes and idx.size >= 2


def _clusters_to_fit(state: SplitState, ik: int, fits: dict, s: SplitSettings) -> list[int]:
    """``ik`` and every later testable cluster without a fit yet, largest first (the longest
    fits start first when they are spread over workers)."""
    later = [
        k
        for k in range(ik + 1, state.n_clusters)
        if k not in fits and _testable(state.members[k], s)
    ]
    return sorted([ik] + later, key=lambda k: -state.members[k].size)


def split_clusters(
    times,
    spike_templates,
    labels,
    pc_features,
    pc_feature_ind,
    wpca,
    dense_templates,
    similarity,
    sample_rate,
    settings: SplitSettings,
    workers: int = 1,
) -> SplitState:
    """Split bimodal clusters (see the module docstring).

    ``times``, ``spike_templates`` and ``pc_features`` may be Zarr arrays, read by rows, one
    cluster at a time per process. The fits (the expensive part) are computed ahead by
    ``workers`` processes for every later cluster not fitted yet: a cluster's spikes only change
    when the visit reaches it, so a fit stays valid until then; a cluster just split is fitted
    again. Labels, new ids and tables are the same whatever the number of workers.

    Parameters
    ----------
    times : array (n,)
        Spike times (samples), sorted.
    spike_templates : array (n,)
        Template each spike was found with (its features' channel list).
    labels : ndarray (n,)
        Cluster of each spike after merges (cluster ids = template ids).
    pc_features : array (n, nPCs, C)
    pc_feature_ind : ndarray (Nfilt, C)
    wpca : ndarray (nt0, >= nPCs)
    dense_templates : ndarray (Nfilt, nt0, Nchan)
    similarity : ndarray (Nfilt, Nfilt)
    sample_rate : float
    settings : SplitSettings
    workers : int
        Processes fitting clusters.

    Returns
    -------
    SplitState
    """
    n_templates, n_channels = dense_templates.shape[0], dense_templates.shape[2]
    labels = np.asarray(labels, dtype=np.int64).copy()
    state = SplitState(
        labels,
        members_by_label(labels, n_templates),
        list(range(n_templates)),
        [-1] * n_templates,
        [t for t in dense_templates],
        np.asarray(similarity, dtype=np.float32),
    )
    source = FeatureSource(pc_features, spike_templates, pc_feature_ind, settings)
    fits = {}  # cluster -> accepted fit (or None) of its current spikes
    with WorkerPool(workers, inherited=source) as pool:
        ik = 0
        while ik < state.n_clusters:
            idx = state.members[ik]
            if not _testable(idx, settings):
                ik += 1
                continue
            if ik not in fits:
                batch = _clusters_to_fit(state, ik, fits, settings)
                fits.update(
                    zip(
                        batch,
                        pool.map(
                            accepted_fit, [(state.members[k], state.source[k]) for k in batch]
                        ),
                    )
                )
            fit = fits.pop(ik)
            if fit is None:
                ik += 1
                continue
            src = state.source[ik]
            feats = cluster_features(pc_features, spike_templates, idx, src, pc_feature_ind)
            if _vetoed(fit, idx, feats, times, wpca, sample_rate, settings, ik):
                ik += 1
                continue
            chans = pc_feature_ind[src]
            w_low = dense_on_channels(mean_waveform(feats[fit.low], wpca), chans, n_channels)
            w_high = dense_on_channels(mean_waveform(feats[~fit.low], wpca), chans, n_channels)
            new = state.add_split(ik, idx[fit.low], idx[~fit.low], w_low, w_high)
            logger.info(
                "split cluster %d (%d spikes) -> %d + %d (new id %d; confidence %.3f/%.3f)",
                ik,
                idx.size,
                int((~fit.low).sum()),
                int(fit.low.sum()),
                new,
                fit.p_high,
                fit.p_low,
            )
    logger.info("%d splits; %d clusters", state.n_clusters - n_templates, state.n_clusters)
    return state


def _vetoed(fit, idx, feats, times, wpca, sample_rate, s: SplitSettings, ik) -> bool:
    t_low, t_high = read_rows(times, idx[fit.low]), read_rows(times, idx[~fit.low])
    if halves_refractory(t_low, t_high, sample_rate, s.veto_Q, s.veto_R):
        logger.debug("cluster %d: split vetoed, the halves share a refractory period", ik)
        return True
    if time_separation(t_low, t_high) > s.veto_time_separation:
        logger.debug("cluster %d: split vetoed, the halves are one unit before and after", ik)
        return True
    c1, c2 = mean_waveform(feats[fit.low], wpca), mean_waveform(feats[~fit.low], wpca)
    if same_waveform(c1, c2, s.veto_corr, s.veto_ampdiff):
        logger.debug("cluster %d: split vetoed, the halves have the same waveform", ik)
        return True
    return False


# --------------------------------------------------------------------------------------------
# the stage


def write_split_store(
    out,
    state: SplitState,
    pc_feature_ind,
    template_feature_ind,
    nt0,
    nt0min,
    n_channels,
    params: dict,
) -> None:
    """Write ``split.zarr`` (see the module docstring)."""
    n_clusters = state.n_clusters
    source = np.asarray(state.source, dtype=np.int64)
    n_templates = pc_feature_ind.shape[0]
    attrs = {
        "n_clusters": n_clusters,
        "n_splits": n_clusters - n_templates,
        "nt0": nt0,
        "nt0min": nt0min,
    }
    templates = (
        np.stack(state.templates) if n_clusters else np.zeros((0, nt0, n_channels), np.float32)
    )
    with writing_store(out, "split", params, "cpu", params.get("seed"), attrs=attrs) as g:
        labels = state.labels.astype(np.uint32)
        write_array(g, "cluster", labels, chunks=(max(1, min(SPIKE_CHUNK, labels.size)),))
        write_array(g, "parent", np.asarray(state.parent, dtype=np.int64))
        write_array(g, "source_template", source.astype(np.uint32))
        write_array(
            g,
            "templates",
            templates.astype(np.float32),
            chunks=(max(1, min(64, n_clusters)),) + templates.shape[1:],
        )
        write_array(g, "similar_templates", state.similar.astype(np.float32))
        write_array(g, "pc_feature_ind", pc_feature_ind[source].astype(np.uint32))
        write_array(g, "template_feature_ind", template_feature_ind[source].astype(np.uint32))


def run_split(
    spikes_zarr, templates_zarr, merge_zarr, input_json, params: dict, out, workers: int = 1
) -> SplitState:
    """The ``split`` stage: read spikes, templates and merges; split; write ``split.zarr``.

    Parameters
    ----------
    spikes_zarr, templates_zarr, merge_zarr : path
        Final-pass spikes, learned templates, merge labels.
    input_json : path
        The recording description (sample rate).
    params : dict
        Resolved ``split`` parameters.
    out : path
        ``split.zarr`` to write.
    workers : int
        Processes fitting clusters at most (one per ``SPIKES_PER_WORKER`` spikes; the same
        output whatever the number).
    """
    spikes = open_spikes(spikes_zarr)
    templates = read_templates(templates_zarr)
    indices = read_feature_indices(spikes_zarr)
    check_template_counts(spikes, templates, indices)
    labels = np.asarray(open_store(merge_zarr)["cluster"][...], dtype=np.int64)
    if labels.size != spikes.n_spikes:
        raise StoreMismatchError(
            f"{merge_zarr} labels {labels.size} spikes but {spikes_zarr} holds {spikes.n_spikes}"
        )
    sample_rate = float(read_input_json(input_json)["sample_rate"])
    logger.info(
        "split: %d spikes, %d clusters after merges", spikes.n_spikes, np.unique(labels).size
    )
    if spikes.n_spikes == 0:
        logger.warning("no spikes found: nothing to split; split.zarr is written empty")
    times, spike_templates, pc_features = (
        spikes.time,
        spikes.template,
        open_store(spikes_zarr)["pc_features"],
    )
    if pc_features.nbytes <= IN_MEMORY_BYTES:
        times, spike_templates, pc_features = (
            np.asarray(a[...]) for a in (times, spike_templates, pc_features)
        )
    state = split_clusters(
        times,
        spike_templates,
        labels,
        pc_features,
        indices["pc_feature_ind"],
        templates.wPCA,
        templates.dense(),
        indices["similar_templates"],
        sample_rate,
        SplitSettings.from_params(params),
        workers_for(spikes.n_spikes, workers),
    )
    write_split_store(
        out,
        state,
        indices["pc_feature_ind"],
        indices["template_feature_ind"],
        templates.nt0,
        templates.nt0min,
        templates.n_channels,
        params,
    )
    return state
