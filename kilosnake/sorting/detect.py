"""The detect stage: universal waveforms, neighbourhoods, kernels and the first templates.

``detect.zarr`` holds everything the learner needs besides the data:

| array | shape | content |
| --- | --- | --- |
| ``wTEMP`` | (nt0, 6) float32 | snippet prototypes (scaled k-means), negative at ``nt0min`` |
| ``wPCA`` | (nt0, 6) float32 | snippet principal components, PC1 negative at ``nt0min`` |
| ``iC`` | (n_near, Nchan) int64 | nearest channels of each channel (itself first) |
| ``mask`` | (n_near, Nchan) float32 | Gaussian channel weights (``sigmaMask``) |
| ``C2C`` | (Nchan, Nchan) float64 | channel distances (µm) |
| ``Ka``, ``Kb`` | (nup, nt0), (nt0, nt0, nup) float64 | sub-sample alignment kernels |
| ``batch_order`` | (Nbatch,) int64 | learning order (seeded permutation) |
| ``dWU`` | (nt0, Nchan, Nfilt0) float64 | initial templates, seeded from ``batch_order[0]`` |
| ``seed_time``, ``seed_channel`` | (Nfilt0,) | peak sample and channel of each seed |
| ``snippet_time``, ``snippet_channel`` | (n,) | the isolated peaks the waveforms came from |

New templates (the first ones here, later ones from the learner's residual) come from
:func:`detect_new_spikes`: the data filtered with every ``wTEMP`` prototype, summed over the
``n_sum`` nearest channels, thresholded at ``Th[0]`` with temporal and channel suppression.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from kilosnake.errors import KilosnakeError
from kilosnake.io.corrected_traces import open_reader
from kilosnake.io.store import write_array, writing_store
from kilosnake.io.traces import batch_window, n_batches, read_batch
from kilosnake.runtime.backend import Backend, get_backend
from kilosnake.runtime.progress import Progress
from kilosnake.sorting import batches, empty, kernels, waveforms

logger = logging.getLogger(__name__)

#: channels summed when scoring new templates (Kilosort's Nsum, clipped to Nchan)
N_SUM = 7
#: a new template must be the largest detection within this many channel indices
CHANNEL_RADIUS = 5
#: at most this many new templates per batch
MAX_NEW_PER_BATCH = 5000
#: stop collecting snippets once this many were found
MAX_SNIPPETS = 100_000
#: channels per neighbourhood (Kilosort's NchanNear)
N_NEAR = 32
#: float32 elements of scratch per time chunk of the new-spike filter bank on the CPU: the
#: filter outputs of a chunk (prototypes x channels x samples) stay in the processor's cache
#: while the neighbour sums read them seven times (a 16M-element chunk was 3x slower)
_CPU_FILTER_BLOCK = 3 * 2**20
#: ... on the GPU, where fewer, larger blocks cost fewer kernel launches
_GPU_FILTER_BLOCK = 64 * 2**20


# --------------------------------------------------------------------------------------------
# new templates from data or residual


def detect_new_spikes(
    be: Backend,
    X,
    wTEMP,
    iC,
    Th: float,
    nt0min: int,
    n_sum: int = N_SUM,
    channel_radius: int = CHANNEL_RADIUS,
    max_spikes: int = MAX_NEW_PER_BATCH,
    owned=None,
):
    """Peaks of the universal-waveform filter bank summed over nearest channels.

    For every channel ``c``, prototype ``r`` and onset ``t``, ``F = <X[t:t+nt0, c], wTEMP_r>``;
    partial sums ``S_j`` of ``F`` over the ``j+1`` nearest channels of ``c`` give the score
    ``max_{j,r} max(S_j, 0)² / (j+1)``. A detection is a sample whose best score over channels
    exceeds ``Th²``, is the largest within ±(nt0−1) samples, and is the largest of all the
    batch's detections within ``channel_radius`` channel indices.

    Parameters
    ----------
    be : Backend
    X : array (T, Nchan) float32
    wTEMP : array (nt0, n_proto)
    iC : array (n_near, Nchan) int
    Th : float
        Threshold (whitened SD).
    nt0min : int
    n_sum : int
    channel_radius : int
    max_spikes : int
    owned : (int, int), optional
        Only peak samples in ``[owned[0], owned[1])`` (batch coordinates) are returned.

    Returns
    -------
    times, channels : arrays of int64 (device)
        Peak sample (batch coordinates) and channel of each detection, sorted by time.
    """
    xp = be.xp
    X = xp.asarray(X, dtype=xp.float32)
    wTEMP = xp.asarray(wTEMP, dtype=xp.float32)
    iC = xp.asarray(iC)
    nt0 = wTEMP.shape[0]
    score, channel = _best_summed_scores(be, X, wTEMP, iC[: min(n_sum, iC.shape[0])])
    half = nt0 - 1
    running = be.ndimage.maximum_filter1d(score, size=2 * half + 1, mode="constant", cval=-1.0)
    onsets = xp.nonzero((score > float(Th) ** 2) & (score >= running))[0]
    if onsets.shape[0] > 1:  # equal maxima: keep the first
        onsets = onsets[xp.concatenate([xp.ones(1, dtype=bool), xp.diff(onsets) > half])]
    times = onsets + nt0min
    if owned is not None:
        keep = (times >= owned[0]) & (times < owned[1])
        onsets, times = onsets[keep], times[keep]
    chans = channel[onsets]
    keep = _largest_among_channel_neighbours(be, score[onsets], chans, X.shape[1], channel_radius)
    times, chans, heights = times[keep], chans[keep], score[onsets][keep]
    if times.shape[0] > max_spikes:
        top = xp.sort(xp.argsort(-heights, kind="stable")[:max_spikes])
        times, chans = times[top], chans[top]
    return times.astype(xp.int64), chans.astype(xp.int64)


def _best_summed_scores(be: Backend, X, wTEMP, iC_sum):
    """Best score over channels and prototypes at each onset, and its channel."""
    xp = be.xp
    T, n_chan = X.shape
    nt0, n_proto = wTEMP.shape
    n_out = T - nt0 + 1
    score = xp.empty(n_out, dtype=xp.float32)
    channel = xp.empty(n_out, dtype=xp.int64)
    block = _GPU_FILTER_BLOCK if be.name == "gpu" else _CPU_FILTER_BLOCK
    step = max(4 * nt0, block // max(1, n_chan * n_proto * 2))
    kernel = wTEMP.T[:, None, ::-1]  # (n_proto, 1, nt0): correlation as convolution
    conv = getattr(be.signal, "oaconvolve", None) or be.signal.fftconvolve
    Xt = X.T  # channel-major so that neighbour gathers copy whole rows
    # one CUDA kernel on the GPU, the same operations as the array code
    summed = (
        kernels.best_summed_scores
        if be.use_kernels
        else functools.partial(summed_scores_by_arrays, be)
    )
    for t0 in range(0, n_out, step):
        t1 = min(n_out, t0 + step)
        chunk = Xt[None, :, t0 : t1 + nt0 - 1]
        F = conv(chunk, kernel, mode="valid", axes=2).astype(xp.float32)  # (n_proto, Nchan, L)
        score[t0:t1], channel[t0:t1] = summed(F, iC_sum)
    return score, channel


def summed_scores_by_arrays(be: Backend, F, iC_sum):
    """:func:`kilosnake.sorting.kernels.best_summed_scores` in array operations (any backend)."""
    xp = be.xp
    weights = kernels.summed_score_weights(iC_sum.shape[0])
    running = F[:, iC_sum[0], :]  # a copy: the partial sum over the nearest channel
    top = xp.empty(F.shape[1:], dtype=xp.float32)
    best = xp.zeros(F.shape[1:], dtype=xp.float32)
    for j in range(iC_sum.shape[0]):
        if j:
            xp.add(running, F[:, iC_sum[j], :], out=running)
        xp.max(running, axis=0, out=top)
        xp.maximum(top, 0, out=top)
        xp.multiply(top, top, out=top)
        xp.multiply(top, weights[j], out=top)
        xp.maximum(best, top, out=best)
    return best.max(axis=0), best.argmax(axis=0)


def _largest_among_channel_neighbours(be: Backend, heights, channels, n_chan: int, radius: int):
    """Mask of detections that are the largest of all detections within ``radius`` channels."""
    xp = be.xp
    if heights.shape[0] == 0:
        return xp.zeros(0, dtype=bool)
    per_channel = xp.full(n_chan, -1.0, dtype=xp.float32)
    onehot = channels[:, None] == xp.arange(n_chan)[None, :]
    per_channel = xp.maximum(per_channel, xp.where(onehot, heights[:, None], -1.0).max(axis=0))
    local = be.ndimage.maximum_filter1d(
        per_channel, size=2 * radius + 1, mode="constant", cval=-1.0
    )
    return heights >= local[channels]


def new_template_waveforms(be: Backend, X, times, wPCA, nt0min: int):
    """Clips of all channels around ``times`` projected on the temporal basis ``wPCA``.

    Returns
    -------
    array (n, nt0, Nchan) float64
    """
    xp = be.xp
    basis = xp.asarray(wPCA, dtype=xp.float64)
    nt0 = basis.shape[0]
    rows = xp.asarray(times)[:, None] - nt0min + xp.arange(nt0)[None, :]
    clips = xp.asarray(X)[rows].astype(xp.float64)  # (n, nt0, Nchan)
    return xp.einsum("sk,tk,ntc->nsc", basis, basis, clips)


# --------------------------------------------------------------------------------------------
# universal waveforms from isolated peaks


def collect_snippets(be: Backend, reader, p: dict, margin: int):
    """Isolated-peak snippets from batches ``0, nskip, …`` (all batches if too few found).

    Returns
    -------
    snippets : ndarray (n, nt0) float32 (host)
    times, channels : ndarray (n,) int64 absolute peak samples and channels
    """
    nb = n_batches(reader.n_samples, reader.NT)
    snips, times, chans = _scan_batches(
        be, reader, p, margin, batches.snippet_batches(nb, p["nskip"])
    )
    if snips.shape[0] < 10 * waveforms.N_UNIVERSAL and p["nskip"] > 1:
        logger.info(
            "only %d isolated peaks in every %d-th batch; scanning every batch",
            snips.shape[0],
            p["nskip"],
        )
        snips, times, chans = _scan_batches(be, reader, p, margin, np.arange(nb))
    return snips, times, chans


def _scan_batches(be: Backend, reader, p: dict, margin: int, which):
    nt0, nt0min = p["nt0"], p["nt0min"]
    parts = []
    total = 0
    progress = Progress(len(which), "detect: snippet scan", logger)
    for b in which:
        w = batch_window(int(b), reader.n_samples, reader.NT, margin)
        X = be.asarray(read_batch(reader, w))
        t, c = waveforms.isolated_peaks(
            be, X, p["spkTh"], p["loc_range"], p["long_range"], edge=nt0
        )
        keep = w.owns(t + w.read_start)
        t, c = t[keep], c[keep]
        s = waveforms.extract_snippets(be, X, t, c, nt0, nt0min)
        parts.append((be.to_host(s), be.to_host(t) + w.read_start, be.to_host(c)))
        total += int(t.shape[0])
        progress.update(peaks=total)
        if total > MAX_SNIPPETS:
            break
    progress.close()
    snips = np.concatenate([q[0] for q in parts]) if parts else np.zeros((0, nt0), np.float32)
    times = np.concatenate([q[1] for q in parts]) if parts else np.zeros(0, np.int64)
    chans = np.concatenate([q[2] for q in parts]) if parts else np.zeros(0, np.int64)
    return snips[:MAX_SNIPPETS], times[:MAX_SNIPPETS], chans[:MAX_SNIPPETS]


def universal_waveforms(be: Backend, snippets, nt0min: int):
    """``wTEMP`` and ``wPCA`` (host, (nt0, 6) float32 each) from snippets."""

    if snippets.shape[0] < waveforms.N_UNIVERSAL:
        raise KilosnakeError(
            f"only {snippets.shape[0]} isolated threshold crossings were found: too few to "
            "build the universal waveforms (is the recording silent, or spkTh too strict?)"
        )
    S = be.asarray(snippets)
    wTEMP = waveforms.scaled_kmeans_prototypes(be, S, waveforms.N_UNIVERSAL, nt0min=nt0min)
    wPCA = waveforms.pca_basis(be, S, waveforms.N_UNIVERSAL, nt0min)
    return be.to_host(wTEMP), be.to_host(wPCA)


# --------------------------------------------------------------------------------------------
# the stage


def run_detect(preprocessed, out, p: dict, drift=None) -> None:
    """The ``detect`` stage: ``preprocessed.zarr`` (+ ``drift.zarr``) → ``detect.zarr``.

    Parameters
    ----------
    preprocessed : str or Path
        The preprocessed store.
    out : str or Path
        The store to write.
    p : dict
        Resolved parameters (detect and learn stages, device, seed).
    drift : str or Path, optional
        The drift store; the traces are read drift-corrected when given.
    """
    be = get_backend(p["device"])
    reader = open_reader(preprocessed, drift, be)
    result = compute_detect(be, reader, p)
    attrs = {
        "nt0": p["nt0"],
        "nt0min": p["nt0min"],
        "NT": reader.NT,
        "n_samples": reader.n_samples,
        "sample_rate": reader.sample_rate,
        "n_batches": int(result["batch_order"].size),
        "n_snippets": int(result["snippet_time"].size),
        "template_layout": "nt0,Nchan,Nfilt",
    }
    with writing_store(out, "detect", p, be.name, p.get("seed"), attrs) as g:
        for name, value in result.items():
            write_array(g, name, value)


def compute_detect(be: Backend, reader, p: dict) -> dict:
    """Everything ``detect.zarr`` holds, as host arrays (see the module docstring)."""
    nt0, nt0min = p["nt0"], p["nt0min"]
    margin = batches.read_margin(nt0)
    snips, s_times, s_chans = collect_snippets(be, reader, p, margin)
    logger.info("%d isolated peaks for the universal waveforms", snips.shape[0])
    if snips.shape[0] < waveforms.N_UNIVERSAL:
        return detect_without_spikes(reader, p, s_times, s_chans)
    wTEMP, wPCA = universal_waveforms(be, snips, nt0min)
    probe = reader.probe
    iC, mask, C2C = waveforms.closest_channels(probe.xc, probe.yc, N_NEAR, p["sigmaMask"])
    Ka, Kb = waveforms.kriging_kernels(nt0, nt0min, p["nup"], p["sig"])
    order = batches.learning_order(n_batches(reader.n_samples, reader.NT), p["seed"])
    w = batch_window(int(order[0]), reader.n_samples, reader.NT, margin)
    X = be.asarray(read_batch(reader, w))
    owned = (w.start - w.read_start, w.stop - w.read_start)
    t, c = detect_new_spikes(be, X, wTEMP, iC, p["Th"][0], nt0min, owned=owned)
    dWU = new_template_waveforms(be, X, t, wPCA[:, :3], nt0min)
    logger.info("%d initial templates from batch %d", int(t.shape[0]), int(order[0]))
    return {
        "wTEMP": wTEMP,
        "wPCA": wPCA,
        "iC": iC,
        "mask": mask,
        "C2C": C2C,
        "Ka": Ka,
        "Kb": Kb,
        "batch_order": order,
        "dWU": np.ascontiguousarray(be.to_host(dWU).transpose(1, 2, 0)),
        "seed_time": (be.to_host(t) + w.read_start).astype(np.int64),
        "seed_channel": be.to_host(c).astype(np.int64),
        "snippet_time": s_times.astype(np.int64),
        "snippet_channel": s_chans.astype(np.int64),
    }


def detect_without_spikes(reader, p: dict, s_times, s_chans) -> dict:
    """``detect.zarr`` of a recording with too few threshold crossings: neighbourhoods, kernels
    and learning order as usual, no universal waveforms and no seed templates."""
    probe = reader.probe
    iC, mask, C2C = waveforms.closest_channels(probe.xc, probe.yc, N_NEAR, p["sigmaMask"])
    Ka, Kb = waveforms.kriging_kernels(p["nt0"], p["nt0min"], p["nup"], p["sig"])
    order = batches.learning_order(n_batches(reader.n_samples, reader.NT), p["seed"])
    return {
        "iC": iC,
        "mask": mask,
        "C2C": C2C,
        "Ka": Ka,
        "Kb": Kb,
        "batch_order": order,
        **empty.empty_detect(int(s_times.size), p["spkTh"], p["nt0"], reader.n_channels),
        "snippet_time": s_times.astype(np.int64),
        "snippet_channel": s_chans.astype(np.int64),
    }
