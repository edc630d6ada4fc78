"""The learn stage: Kilosort 2.5 online template learning.

Every batch is visited once, in the seeded order stored by the detect stage (at most
``learn_batches`` of them: the first of that order). For each batch:

1. rank-3 factors ``W, U, mu`` of the running-average waveforms ``dWU`` (batched SVD on each
   template's 32 nearest channels, peaks aligned to ``nt0min``);
2. matching pursuit with threshold ``Th[0]`` and amplitude prior ``lam``;
3. momentum update: ``dWU_i ← f·dWU_i + (1−f)·mean of its new spikes`` with ``f = pm^n_i``,
   ``pm = exp(−1/m)`` and ``m`` annealed linearly from ``momentum[0]`` to ``momentum[1]``;
   the running spike count ``nsp ← 0.95·nsp + 0.05·n``;
4. every 5th batch, triage: drop templates firing below ``minFR`` and the smaller-count one of
   near-duplicates (zero-lag correlation > 0.9, amplitudes within 4√10);
5. new templates from the residual (:func:`kilosnake.sorting.detect.detect_new_spikes`), up to
   ``nfilt_factor × Nchan`` templates in all.

``templates.zarr`` holds ``W`` (nt0, Nfilt, 3), ``U`` (Nchan, Nfilt, 3), ``mu`` (Nfilt,),
``wPCA`` (nt0, 3) and ``iW`` (Nfilt,) as in docs/stores.md, plus ``wPCA_all`` (nt0, 6),
``dWU`` (nt0, Nchan, Nfilt) float32 running-average waveforms, ``nsp`` (Nfilt,),
``similar_templates`` (Nfilt, Nfilt), ``template_neighbours`` (Nfilt, K) (the K most similar
templates, itself first), ``pc_channels`` (Nfilt, C) (``iC[:, iW]``), ``iC`` and ``wTEMP``.
Templates are ordered by peak channel.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from kilosnake.io.corrected_traces import open_reader
from kilosnake.io.store import open_store, read_arrays, write_array, writing_store
from kilosnake.io.traces import batch_window, prefetching, read_batch
from kilosnake.runtime import gpu_memory
from kilosnake.runtime.backend import Backend, get_backend
from kilosnake.runtime.progress import Progress
from kilosnake.sorting import batches, empty, kernels, matching, svd
from kilosnake.sorting.detect import detect_new_spikes, new_template_waveforms

logger = logging.getLogger(__name__)

#: templates are triaged every this many batches
TRIAGE_EVERY = 5
#: near-duplicate templates: zero-lag correlation above this ...
DUPLICATE_CC = 0.9
#: ... and amplitudes closer than this
DUPLICATE_AMPLITUDE = 4.0 * math.sqrt(10.0)
#: weight of the previous running spike count (Kilosort's p1)
COUNT_MEMORY = 0.95
#: spike waveforms averaged at once (bounds scratch memory)
_AVERAGE_CHUNK = 512
#: templates per feature neighbourhood / channels per PC neighbourhood (Kilosort's 32)
N_FEATURE_NEIGHBOURS = 32


@dataclasses.dataclass
class LearnerState:
    """What the learner carries from batch to batch (device arrays)."""

    dWU: object  # (Nfilt, nt0, Nchan) float64 running-average waveforms
    nsp: object  # (Nfilt,) float64 running spike count per batch

    @property
    def n_templates(self) -> int:
        return int(self.dWU.shape[0])

    def keep(self, mask) -> LearnerState:
        return LearnerState(self.dWU[mask], self.nsp[mask])

    def add(self, be: Backend, dWU_new, nsp_value: float, cap: int) -> LearnerState:
        xp = be.xp
        room = max(0, cap - self.n_templates)
        dWU_new = dWU_new[:room]
        nsp_new = xp.full(dWU_new.shape[0], nsp_value, dtype=xp.float64)
        return LearnerState(
            xp.concatenate([self.dWU, dWU_new]), xp.concatenate([self.nsp, nsp_new])
        )


def momentum_schedule(momentum, n_iter: int) -> np.ndarray:
    """Per-batch forgetting factors ``pm = exp(−1/m)``, ``m`` linear in ``momentum``."""
    m = np.linspace(float(momentum[0]), float(momentum[1]), max(1, n_iter))
    return np.exp(-1.0 / m)


def learning_batches(batch_order: np.ndarray, limit: int) -> np.ndarray:
    """The batches learning visits: the first ``limit`` of the seeded order (all for 0).

    The order is a seeded random permutation, so its first batches sample the whole recording:
    a long recording is learned from as much data as a short one (the final pass still reads
    every batch).
    """
    return batch_order if limit <= 0 else batch_order[:limit]


def min_spikes_per_batch(minFR: float, NT: int, sample_rate: float) -> float:
    """Running spike count below which a template is dropped (Kilosort's m0)."""
    return float(minFR) * NT / float(sample_rate)


def momentum_update(be: Backend, state: LearnerState, sums, counts, pm: float) -> LearnerState:
    """Blend each template's waveform with the mean of its new spikes, and update counts."""
    xp = be.xp
    f = xp.power(float(pm), counts.astype(xp.float64))
    mean = sums / xp.maximum(counts, 1)[:, None, None]
    dWU = f[:, None, None] * state.dWU + (1.0 - f)[:, None, None] * mean
    nsp = COUNT_MEMORY * state.nsp + (1.0 - COUNT_MEMORY) * counts
    return LearnerState(dWU, nsp)


def triage(be: Backend, nsp, mu, ctc, m0: float):
    """Mask of templates to keep: firing often enough and not a weaker near-duplicate.

    Parameters
    ----------
    be : Backend
    nsp : array (Nfilt,)
        Running spike counts.
    mu : array (Nfilt,)
        Amplitudes.
    ctc : array (Nfilt, 2*nt0-1, Nfilt)
        Template cross-correlations (zero lag used).
    m0 : float
        Minimum running spike count.
    """
    xp = be.xp
    n = nsp.shape[0]
    cc = svd.zero_lag_correlation(ctc).astype(xp.float64) * (1 - xp.eye(n))
    similar_amp = xp.abs(mu[:, None] - mu[None, :]) < DUPLICATE_AMPLITUDE
    weaker = nsp[:, None] < nsp[None, :]
    duplicate = ((cc > DUPLICATE_CC) & similar_amp & weaker).any(axis=1)
    return (nsp >= m0) & ~duplicate


def accumulate_spikes(be: Backend, result: matching.PeelResult, tset: matching.TemplateSet):
    """Sum of (residual + own template) waveforms of the spikes, per template, and counts.

    The residual windows are summed per template (in chunks of spikes ordered by template and
    time); the templates' own share is added once per template as ``Σ amplitude × template``.
    """
    xp = be.xp
    n_filt, nt0 = tset.n_templates, tset.nt0
    order = xp.lexsort(xp.stack([result.onset, result.template]))
    sums, counts = residual_sums(be, result, order, n_filt, nt0)
    amp_sums, _ = matching.segment_sum(
        be, result.amplitude[order].astype(xp.float64), result.template[order], n_filt
    )
    sums += amp_sums[:, None, None] * tset.dense(be).astype(xp.float64)
    return sums, counts


def residual_sums(be: Backend, result: matching.PeelResult, order, n_filt: int, nt0: int):
    """Per-template sums of the spikes' residual windows (float64) and spike counts; ``order``
    sorts the spikes by template and time. On the GPU one CUDA kernel adds each template's
    spikes in that order; otherwise :func:`kilosnake.sorting.matching.segment_sum` in chunks."""
    xp = be.xp
    if be.use_kernels:
        sums = kernels.sum_windows_per_template(
            result.residual, result.onset[order], result.template[order], n_filt, nt0
        )
        return sums, xp.bincount(result.template, minlength=n_filt)[:n_filt].astype(xp.int64)
    sums = xp.zeros((n_filt, nt0, result.residual.shape[1]))
    counts = xp.zeros(n_filt, dtype=xp.int64)
    for s0 in range(0, result.n_spikes, _AVERAGE_CHUNK):
        part = result.select(order[s0 : s0 + _AVERAGE_CHUNK])
        s, c = matching.segment_sum(
            be, matching.residual_windows(be, part, nt0), part.template, n_filt
        )
        sums += s
        counts += c
    return sums, counts


def learn_batch(be: Backend, state: LearnerState, X, owned, det: dict, p: dict, pm: float):
    """One learning step: factorise, match with ``Th[0]``, blend the new spikes in.

    Parameters
    ----------
    be : Backend
    state : LearnerState
    X : array (T, Nchan)
        The batch with its margins.
    owned : (int, int)
        Peak samples (batch coordinates) the batch owns; only their spikes are averaged.
    det : dict
        ``iC``, ``Ka``, ``Kb`` (device arrays).
    p : dict
        Resolved parameters.
    pm : float
        Forgetting factor of this batch.

    Returns
    -------
    state : LearnerState
    result : PeelResult
        The owned spikes and the batch's residual.
    lr : LowRankTemplates
        The factors the batch was matched with.
    tset : TemplateSet
    """
    lr = svd.factorise_templates(be, state.dWU, det["iC"], det["Ka"], det["Kb"], p["nt0min"])
    tset = matching.make_template_set(be, lr.W, lr.U, lr.mu)
    result = matching.peel(be, X, tset, p["Th"][0], p["lam"])
    peaks = result.onset + p["nt0min"]
    result = result.select((peaks >= owned[0]) & (peaks < owned[1]))
    sums, counts = accumulate_spikes(be, result, tset)
    state = momentum_update(be, state, sums, counts, pm)
    return state, result, lr, tset


def add_templates_from_residual(
    be: Backend,
    state: LearnerState,
    residual,
    owned,
    dev: dict,
    wPCA3,
    p: dict,
    m0: float,
    cap: int,
) -> LearnerState:
    """Append templates seeded by the residual's unexplained spikes (up to ``cap`` in all).

    New templates start as the clips projected on the first three PCs, with the running spike
    count ``m0`` (so they are dropped at the next triage unless they catch spikes).
    """
    t, _ = detect_new_spikes(
        be, residual, dev["wTEMP"], dev["iC"], p["Th"][0], p["nt0min"], owned=owned
    )
    waveforms = new_template_waveforms(be, residual, t, wPCA3, p["nt0min"])
    return state.add(be, waveforms, m0, cap)


def learn_templates(be: Backend, reader, det: dict, p: dict) -> dict:
    """Run template learning over every batch once; return the final templates (host).

    Parameters
    ----------
    be : Backend
    reader : PreprocessedReader
    det : dict
        Arrays of ``detect.zarr`` (``dWU`` in the store layout (nt0, Nchan, Nfilt)).
    p : dict
        Resolved parameters.

    Returns
    -------
    dict of host arrays for ``templates.zarr``
    """
    if not empty.has_universal_waveforms(det):  # the detect stage found no spikes
        return empty.empty_templates(det, p["nt0"], reader.n_channels)
    xp = be.xp
    dev = {k: xp.asarray(det[k]) for k in ("iC", "Ka", "Kb", "wTEMP")}
    wPCA3 = det["wPCA"][:, :3]
    order = learning_batches(np.asarray(det["batch_order"]), int(p["learn_batches"]))
    pms = momentum_schedule(p["momentum"], order.size)
    m0 = min_spikes_per_batch(p["minFR"], reader.NT, reader.sample_rate)
    cap = int(p["nfilt_factor"]) * reader.n_channels
    margin = batches.read_margin(p["nt0"])
    dWU0 = xp.asarray(np.asarray(det["dWU"]).transpose(2, 0, 1), dtype=xp.float64)
    state = LearnerState(dWU0[:cap], xp.full(min(cap, dWU0.shape[0]), m0))
    progress = Progress(order.size, "learn", logger)
    n_spikes = 0
    windows = [batch_window(int(b), reader.n_samples, reader.NT, margin) for b in order]
    gpu_memory.size_blocks_for(matching.projection_scratch_bytes(reader.NT + 2 * margin), cap)
    reader = prefetching(reader, windows, be)
    for i, w in enumerate(windows):
        X = be.asarray(read_batch(reader, w))
        owned = (w.start - w.read_start, w.stop - w.read_start)
        residual = X
        if state.n_templates:
            state, result, lr, tset = gpu_memory.retry_on_out_of_memory(
                f"learn, batch {w.index}", learn_batch, be, state, X, owned, dev, p, pms[i]
            )
            residual = result.residual
            n_spikes += result.n_spikes
            if i % TRIAGE_EVERY == 0:
                state = state.keep(triage(be, state.nsp, lr.mu, tset.ctc, m0))
        if i > 0 or state.n_templates == 0:  # the first batch gave the detect stage's seeds
            state = add_templates_from_residual(be, state, residual, owned, dev, wPCA3, p, m0, cap)
        progress.update(templates=state.n_templates, spikes=n_spikes)
    progress.close()
    reader.close()
    return finalise_templates(be, state, det, p, m0)


def finalise_templates(be: Backend, state: LearnerState, det: dict, p: dict, m0: float) -> dict:
    """Last triage, final factors, ordering by peak channel, similarity and neighbourhoods."""
    xp = be.xp
    dev = {k: xp.asarray(det[k]) for k in ("iC", "Ka", "Kb")}
    nt0min = p["nt0min"]
    if state.n_templates:
        lr = svd.factorise_templates(be, state.dWU, dev["iC"], dev["Ka"], dev["Kb"], nt0min)
        ctc = svd.template_cross_correlations(be, lr.W, lr.U)
        state = state.keep(triage(be, state.nsp, lr.mu, ctc, m0))
    if state.n_templates == 0:
        return empty.empty_templates(det, p["nt0"], int(state.dWU.shape[2]))
    lr = svd.factorise_templates(be, state.dWU, dev["iC"], dev["Ka"], dev["Kb"], nt0min)
    order = xp.argsort(lr.iW, kind="stable")
    state = state.keep(order)
    lr = svd.LowRankTemplates(lr.W[order], lr.U[order], lr.mu[order], lr.iW[order])
    ctc = svd.template_cross_correlations(be, lr.W, lr.U)
    sim = svd.similarity_scores(ctc)
    n_filt = state.n_templates
    k = min(N_FEATURE_NEIGHBOURS, n_filt)
    neighbours = xp.argsort(-sim, axis=1, kind="stable")[:, :k]
    pc_channels = dev["iC"][:, lr.iW].T
    logger.info("learned %d templates", n_filt)
    h = be.to_host
    return {
        "W": h(lr.W).transpose(1, 0, 2).astype(np.float32),
        "U": h(lr.U).transpose(1, 0, 2).astype(np.float32),
        "mu": h(lr.mu).astype(np.float32),
        "wPCA": np.asarray(det["wPCA"])[:, :3].astype(np.float32),
        "wPCA_all": np.asarray(det["wPCA"]).astype(np.float32),
        "wTEMP": np.asarray(det["wTEMP"]).astype(np.float32),
        "iW": h(lr.iW).astype(np.int64),
        "dWU": h(state.dWU).transpose(1, 2, 0).astype(np.float32),
        "nsp": h(state.nsp).astype(np.float64),
        "similar_templates": h(sim).astype(np.float32),
        "template_neighbours": h(neighbours).astype(np.int64),
        "pc_channels": h(pc_channels).astype(np.int64),
        "iC": np.asarray(det["iC"]).astype(np.int64),
    }


DETECT_ARRAYS = ("wTEMP", "wPCA", "iC", "Ka", "Kb", "batch_order", "dWU")


def run_learn(preprocessed, detect_store, out, p: dict, drift=None) -> None:
    """The ``learn`` stage: ``preprocessed.zarr`` + ``detect.zarr`` → ``templates.zarr``.

    Parameters
    ----------
    preprocessed, detect_store : str or Path
        Input stores.
    out : str or Path
        The store to write.
    p : dict
        Resolved parameters (detect and learn stages, device, seed).
    drift : str or Path, optional
        The drift store; the traces are read drift-corrected when given.
    """
    be = get_backend(p["device"])
    reader = open_reader(preprocessed, drift, be)
    det = read_arrays(open_store(detect_store), DETECT_ARRAYS)
    result = learn_templates(be, reader, det, p)
    attrs = {
        "nt0": p["nt0"],
        "nt0min": p["nt0min"],
        "NT": reader.NT,
        "sample_rate": reader.sample_rate,
        "n_samples": reader.n_samples,
        "n_templates": int(result["mu"].size),
        "layouts": {"W": "nt0,Nfilt,rank", "U": "Nchan,Nfilt,rank", "dWU": "nt0,Nchan,Nfilt"},
    }
    with writing_store(out, "learn", p, be.name, p.get("seed"), attrs) as g:
        for name, value in result.items():
            write_array(g, name, value)
