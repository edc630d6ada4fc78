"""The whitening matrix: channel offsets, the covariance of filtered batches, local ZCA per channel
neighbourhood.
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.io.input_json import info_from_input_json, probe_from_input_json, read_input_json
from kilosnake.io.prefetch import Prefetching, RawBatches
from kilosnake.io.probe import Probe, write_probe_arrays
from kilosnake.io.recording import RawRecording, RecordingInfo
from kilosnake.io.store import (
    write_array,
    writing_store,
)
from kilosnake.io.traces import n_batches
from kilosnake.preprocess.filters import (
    batch_constants,
    butterworth_sos,
    filter_margin,
    read_filtered_batch,
)
from kilosnake.runtime.backend import Backend, cpu_backend, get_backend
from kilosnake.runtime.parallel import one_blas_thread

logger = logging.getLogger(__name__)


EPS_ZCA = 1e-6


# --------------------------------------------------------------------------------------------
# whitening


def nearest_channels(xc, yc, n: int) -> np.ndarray:
    """(Nchan, n) indices of the n channels nearest each channel, itself first."""
    pos = np.stack([np.asarray(xc, float), np.asarray(yc, float)], axis=1)
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1, kind="stable")[:, :n]


def zca(cov: np.ndarray, eps: float = EPS_ZCA) -> np.ndarray:
    """Symmetric (ZCA) whitening matrix of a covariance."""
    d, e = np.linalg.eigh(cov)
    return (e * (1.0 / np.sqrt(np.maximum(d, 0) + eps))) @ e.T


def local_whitening_matrix(cov: np.ndarray, xc, yc, whitening_range: int) -> np.ndarray:
    """Local ZCA: column j whitens channel j using its ``whitening_range`` nearest channels.

    ``whitened = filtered @ W``. With ``whitening_range >= Nchan`` this is the full ZCA matrix.
    """
    n = cov.shape[0]
    if whitening_range >= n:
        return zca(cov)
    w = np.zeros((n, n))
    with one_blas_thread():  # one small eigh per channel: see one_blas_thread
        for j, nbrs in enumerate(nearest_channels(xc, yc, whitening_range)):
            w[nbrs, j] = zca(cov[np.ix_(nbrs, nbrs)])[:, 0]
    return w


MIN_COVARIANCE_BATCHES = 10


def covariance_batches(n_batches: int, stride: int) -> np.ndarray:
    """Indices of the batches used for the covariance (and the channel offsets).

    Every ``stride``-th batch, with the stride shortened so that short recordings still use at
    least :data:`MIN_COVARIANCE_BATCHES` batches (all of them when they have fewer).
    """
    stride = max(1, min(stride, n_batches // MIN_COVARIANCE_BATCHES))
    return np.arange(0, n_batches, stride)


#: raw samples per channel, over the whole recording, that the channel offsets come from
OFFSET_SAMPLES = 300_000


def estimate_channel_offsets(
    rec: RawRecording, chan_map, batches, NT: int, be: Backend | None = None
) -> np.ndarray:
    """Per-channel median of the raw data over the sampled batches (at most ``OFFSET_SAMPLES``
    samples in all, so memory does not grow with the recording); computed on ``be`` (the
    median of the same samples is the same number on either backend)."""

    be = be or cpu_backend()
    n = max(1, min(NT, int(rec.info.sample_rate), OFFSET_SAMPLES // len(batches)))
    parts = [rec.read(b * NT, min(b * NT + n, rec.n_samples), chan_map) for b in batches]
    samples = be.asarray(np.concatenate(parts, axis=0))
    return be.to_host(be.xp.median(samples, axis=0)).astype(np.float64)


def estimate_covariance(rec: RawRecording, probe: Probe, offsets, p: dict, be: Backend):
    """Covariance of the filtered data over every ``nSkipCov``-th batch."""
    NT = p["NT"]
    sos = butterworth_sos(p["fshigh"], rec.info.sample_rate, p["fslow"], be)
    offsets, sos = batch_constants(offsets, sos, be)
    margin = filter_margin(p["fshigh"], rec.info.sample_rate, p["ntbuff"])
    batches = covariance_batches(n_batches(rec.n_samples, NT), p["nSkipCov"])
    cov = be.xp.zeros((probe.n_channels, probe.n_channels), dtype=be.xp.float64)
    raw_batches = RawBatches(rec, probe.chan_map, NT, margin, be, n_reads=len(batches))
    with Prefetching(raw_batches, [(b,) for b in batches]) as ahead:
        for b in batches:
            x = read_filtered_batch(
                rec,
                probe,
                offsets,
                b,
                NT,
                margin,
                sos,
                p["CAR"],
                be,
                raw=raw_batches.on_device(ahead.read(b), be),
            )
            x = x.astype(be.xp.float64)
            cov += x.T @ x / x.shape[0]
    return be.to_host(cov / len(batches))


def compute_whitening(info: RecordingInfo, probe: Probe, p: dict, be: Backend, out) -> None:
    """The ``whitening`` stage: channel offsets, covariance and local ZCA matrix → Zarr."""
    rec = RawRecording(info)
    batches = covariance_batches(n_batches(rec.n_samples, p["NT"]), p["nSkipCov"])
    logger.info("whitening from %d of %d batches", len(batches), n_batches(rec.n_samples, p["NT"]))
    offsets = estimate_channel_offsets(rec, probe.chan_map, batches, p["NT"], be)
    cov = estimate_covariance(rec, probe, offsets, p, be)
    w = local_whitening_matrix(cov, probe.xc, probe.yc, p["whiteningRange"])
    cond = np.linalg.cond(w)
    logger.info("whitening matrix condition number %.1f", cond)
    if cond > 50:
        logger.warning(
            "whitening matrix is badly conditioned (%.0f): dead or duplicated "
            "channels? check the input report",
            cond,
        )
    with writing_store(out, "whitening", p, be.name, p.get("seed")) as g:
        write_array(g, "whitening", w)
        write_array(g, "channel_offset", offsets)
        write_array(g, "covariance", cov)
        write_probe_arrays(g, probe)


# --------------------------------------------------------------------------------------------
# stage entry points (what the rule scripts call)


def run_whitening(input_json, p: dict, out) -> None:
    """Stage ``whitening`` from the checked input description."""

    report = read_input_json(input_json)
    compute_whitening(
        info_from_input_json(report),
        probe_from_input_json(report),
        p,
        get_backend(p["device"]),
        out,
    )
