"""Preprocessing: channel offsets, common median reference, high-pass filter, local whitening.

For every batch of ``NT`` samples the raw file is read with a filter margin on both sides, the
probe's channels are kept, each channel's offset (its median over a subset of the recording) is
subtracted, the median across channels is subtracted at every sample (``CAR``), and a 3rd-order
Butterworth high-pass (``fshigh``; band-pass with ``fslow``) is run forward then backward with
zero initial conditions. The margins are dropped, the batch is multiplied by the local ZCA
whitening matrix and stored as int16 scaled by ``scaleproc``.

Because the channel offsets are fixed for the whole recording (Kilosort subtracts each batch's own
mean instead) and the margin is long enough for the filter's start-up transient to die out,
preprocessing batch by batch gives the same result as preprocessing the whole recording at once,
apart from the filter edge at the very start and end of the recording.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np

from .backend import Backend
from .probe import Probe
from .prefetch import HostBuffers, Prefetching, RawBatches, WritingBehind, to_device
from .progress import Progress
from .recording import RawRecording, RecordingInfo
from .store import (TRACE_CODEC, open_store, read_rows_into, trace_chunks, write_array,
                    writing_store)

logger = logging.getLogger(__name__)

EPS_ZCA = 1e-6


# --------------------------------------------------------------------------------------------
# filtering


def butterworth_sos(fshigh: float, sample_rate: float, fslow: float | None = None) -> np.ndarray:
    """Second-order sections of the 3rd-order Butterworth high-pass (or band-pass) filter."""
    import scipy.signal

    nyquist = sample_rate / 2
    if fslow is not None and fslow < nyquist:
        return scipy.signal.butter(3, [fshigh / nyquist, fslow / nyquist], btype="bandpass",
                                   output="sos")
    return scipy.signal.butter(3, fshigh / nyquist, btype="highpass", output="sos")


def filter_margin(fshigh: float, sample_rate: float, ntbuff: int = 0) -> int:
    """Samples needed on each side of a batch for the filter's start-up transient to vanish.

    The slowest pole pair of a 3rd-order Butterworth high-pass decays with time constant
    ``1 / (pi * fshigh)``; 12 time constants bring a transient below 1e-5 of its size.
    """
    return max(int(ntbuff), int(math.ceil(12 * sample_rate / (math.pi * fshigh))))


def filter_forward_backward(x, sos, be: Backend):
    """Causal filter forward, then again on the time-reversed output (zero initial state)."""
    sos = be.asarray(sos, dtype=x.dtype)
    y = be.signal.sosfilt(sos, x, axis=0)
    y = be.signal.sosfilt(sos, y[::-1], axis=0)
    return be.xp.ascontiguousarray(y[::-1])


def common_median_reference(x, be: Backend):
    """Subtract, at every sample, the median across channels."""
    return x - be.xp.median(x, axis=1, keepdims=True)


def filter_batch(raw_batch, offsets, sos, car: bool, be: Backend):
    """Offsets, CAR and high-pass on one (time, channel) batch; returns float32."""
    x = be.asarray(raw_batch).astype(be.xp.float32)  # moved as stored, converted on the device
    x -= be.asarray(offsets, dtype=be.xp.float32)[None, :]
    if car:
        x = common_median_reference(x, be)
    return filter_forward_backward(x, sos, be)


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


def estimate_channel_offsets(rec: RawRecording, chan_map, batches, NT: int,
                             be: Backend | None = None) -> np.ndarray:
    """Per-channel median of the raw data over the sampled batches (at most ``OFFSET_SAMPLES``
    samples in all, so memory does not grow with the recording); computed on ``be`` (the
    median of the same samples is the same number on either backend)."""
    from .backend import cpu_backend

    be = be or cpu_backend()
    n = max(1, min(NT, int(rec.info.sample_rate), OFFSET_SAMPLES // len(batches)))
    parts = [rec.read(b * NT, min(b * NT + n, rec.n_samples), chan_map) for b in batches]
    samples = be.asarray(np.concatenate(parts, axis=0))
    return be.to_host(be.xp.median(samples, axis=0)).astype(np.float64)


def estimate_covariance(rec: RawRecording, probe: Probe, offsets, p: dict, be: Backend):
    """Covariance of the filtered data over every ``nSkipCov``-th batch."""
    NT = p["NT"]
    sos = butterworth_sos(p["fshigh"], rec.info.sample_rate, p["fslow"])
    margin = filter_margin(p["fshigh"], rec.info.sample_rate, p["ntbuff"])
    batches = covariance_batches(n_batches(rec.n_samples, NT), p["nSkipCov"])
    cov = be.xp.zeros((probe.n_channels, probe.n_channels), dtype=be.xp.float64)
    raw_batches = RawBatches(rec, probe.chan_map, NT, margin, be)
    with Prefetching(raw_batches, [(b,) for b in batches]) as ahead:
        for b in batches:
            x = read_filtered_batch(rec, probe, offsets, b, NT, margin, sos, p["CAR"], be,
                                    raw=raw_batches.on_device(ahead.read(b), be))
            x = x.astype(be.xp.float64)
            cov += x.T @ x / x.shape[0]
    return be.to_host(cov / len(batches))


def n_batches(n_samples: int, NT: int) -> int:
    return int(math.ceil(n_samples / NT))


def read_filtered_batch(rec: RawRecording, probe: Probe, offsets, b: int, NT: int, margin: int,
                        sos, car: bool, be: Backend, raw=None):
    """Batch ``b`` (samples [b*NT, (b+1)*NT) clipped to the recording), filtered, float32
    (``raw``: the batch with its margins, already read by :class:`kilosnake.prefetch.RawBatches`).
    """
    start, stop = b * NT, min((b + 1) * NT, rec.n_samples)
    if raw is None:
        raw = rec.read(start - margin, stop + margin, probe.chan_map)
    x = filter_batch(raw, offsets, sos, car, be)
    return x[margin: margin + (stop - start)]


def compute_whitening(info: RecordingInfo, probe: Probe, p: dict, be: Backend, out) -> None:
    """The ``whitening`` stage: channel offsets, covariance and local ZCA matrix → Zarr."""
    rec = RawRecording(info)
    batches = covariance_batches(n_batches(rec.n_samples, p["NT"]), p["nSkipCov"])
    logger.info("whitening from %d of %d batches", len(batches),
                n_batches(rec.n_samples, p["NT"]))
    offsets = estimate_channel_offsets(rec, probe.chan_map, batches, p["NT"], be)
    cov = estimate_covariance(rec, probe, offsets, p, be)
    w = local_whitening_matrix(cov, probe.xc, probe.yc, p["whiteningRange"])
    cond = np.linalg.cond(w)
    logger.info("whitening matrix condition number %.1f", cond)
    if cond > 50:
        logger.warning("whitening matrix is badly conditioned (%.0f): dead or duplicated "
                       "channels? check the input report", cond)
    with writing_store(out, "whitening", p, be.name, p.get("seed")) as g:
        write_array(g, "whitening", w)
        write_array(g, "channel_offset", offsets)
        write_array(g, "covariance", cov)
        write_probe_arrays(g, probe)


def write_probe_arrays(group, probe: Probe) -> None:
    """Store the probe beside a stage's data so later stages need no other file."""
    write_array(group, "chan_map", probe.chan_map)
    write_array(group, "xc", probe.xc)
    write_array(group, "yc", probe.yc)
    write_array(group, "kcoords", probe.kcoords)


def probe_from_group(group) -> Probe:
    """Inverse of :func:`write_probe_arrays`."""
    return Probe(group["chan_map"][...], group["xc"][...], group["yc"][...],
                 group["kcoords"][...])


# --------------------------------------------------------------------------------------------
# the preprocess stage


def whiten_to_int16(x, w, scaleproc: float, be: Backend, out: np.ndarray | None = None):
    """``round((x @ w) * scaleproc)`` clipped to int16, on the host (on a GPU copied into
    ``out`` when given, e.g. a page-locked buffer of :class:`kilosnake.prefetch.HostBuffers`)."""
    y = (x @ be.asarray(w, dtype=be.xp.float32)) * np.float32(scaleproc)
    y = be.xp.clip(be.xp.rint(y), -32768, 32767).astype(be.xp.int16)
    if out is None or be.name != "gpu":
        return be.to_host(y)
    return y.get(out=out)


def preprocess_recording(info: RecordingInfo, whitening_path, p: dict, be: Backend, out,
                         progress_every_s: float = 10.0,
                         block: tuple[int, int] = (0, 1)) -> None:
    """The ``preprocess`` stage: every batch filtered and whitened → ``preprocessed.zarr``.

    ``block=(i, n)`` with ``n > 1`` writes only the batches of block ``i`` of ``n``
    (:func:`kilosnake.scatter.block_batches`): a block store whose traces start at its first
    batch, which :func:`kilosnake.scatter.gather_preprocessed` joins without a copy.
    """
    from .scatter import block_attrs, block_batches

    wg = open_store(whitening_path)
    probe = probe_from_group(wg)
    w, offsets = wg["whitening"][...], wg["channel_offset"][...]
    rec = RawRecording(info)
    NT = p["NT"]
    nb = n_batches(rec.n_samples, NT)
    sos = butterworth_sos(p["fshigh"], info.sample_rate, p["fslow"])
    margin = filter_margin(p["fshigh"], info.sample_rate, p["ntbuff"])
    logger.info("preprocessing %d samples x %d channels in %d batches of %d (margin %d)",
                rec.n_samples, probe.n_channels, nb, NT, margin)
    attrs = {"scaleproc": p["scaleproc"], "NT": NT, "sample_rate": info.sample_rate,
             "n_samples": rec.n_samples, "n_channels_total": info.n_channels_total,
             "dat": info.path, "dtype": info.dtype, "filter_margin": margin}
    batch_range = block_batches(nb, n_blocks=block[1], block=block[0])
    first, stop = min(batch_range.start * NT, rec.n_samples), min(batch_range.stop * NT,
                                                                    rec.n_samples)
    if block[1] > 1:
        attrs.update(block_attrs(*block, batch_range, NT, rec.n_samples))
        logger.info("block %d of %d: batches %d to %d", block[0], block[1], batch_range.start,
                    batch_range.stop - 1)
    progress = Progress(len(batch_range), "preprocess", logger, every_s=progress_every_s)
    with progress, writing_store(out, "preprocess", p, be.name, p.get("seed"), attrs) as g:
        chunks = trace_chunks(NT, probe.n_channels)
        traces = g.create_array("traces", shape=(stop - first, probe.n_channels),
                                dtype="int16", chunks=chunks, compressors=TRACE_CODEC,
                                fill_value=0, dimension_names=("time", "channel"),
                                config={"write_empty_chunks": True})
        write_probe_arrays(g, probe)
        # the next batch is read, and the last ones encoded and written (a thread per chunk),
        # while this one computes; results go through a ring of reused host buffers
        raw_batches = RawBatches(rec, probe.chan_map, NT, margin, be)
        ahead = Prefetching(raw_batches, [(b,) for b in batch_range])
        depth = 2
        # page-locked result buffers on a GPU (on the CPU the result is already a host array)
        results = HostBuffers(NT * probe.n_channels * 2, depth + 2, pinned=True) \
            if be.name == "gpu" else None
        with ahead, WritingBehind(depth, workers=max(1, NT // chunks[0])) as behind:
            for b in batch_range:
                x = read_filtered_batch(rec, probe, offsets, b, NT, margin, sos, p["CAR"], be,
                                        raw=raw_batches.on_device(ahead.read(b), be))
                out = None if results is None else results.take(x.shape, np.int16)
                y = whiten_to_int16(x, w, p["scaleproc"], be, out=out)
                behind.write_rows(traces, b * NT - first, y)
                progress.update()


class PreprocessedReader:
    """Windows of the preprocessed (whitened) traces as float32, zero-padded outside."""

    def __init__(self, path):
        from .scatter import open_traces

        self.path = Path(path)
        self.group = open_store(path)
        self.traces = open_traces(self.group, path)  # one array, or a scattered run's blocks
        attrs = self.group.attrs
        self.scaleproc = float(attrs["scaleproc"])
        self.NT = int(attrs["NT"])
        self.sample_rate = float(attrs["sample_rate"])
        self.n_samples, self.n_channels = self.traces.shape
        self.probe = probe_from_group(self.group)
        self._ring, self._ring_bytes, self._ring_lock = None, 0, threading.Lock()

    def read_int16(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) as stored (int16), zero-padded outside the recording (into
        ``out``, C-ordered ``(stop - start, n_channels)``, when given)."""
        lo, hi = max(start, 0), min(stop, self.n_samples)
        if out is None:
            out = np.zeros((stop - start, self.n_channels), dtype=np.int16)
        else:
            out[:max(0, lo - start)] = 0
            out[max(0, hi - start):] = 0
        if hi > lo:
            read_rows_into(self.traces, lo, hi, out[lo - start: hi - start])
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) in whitened units (float32)."""
        return self.read_int16(start, stop).astype(np.float32) / np.float32(self.scaleproc)

    def read_device(self, be: Backend, start: int, stop: int):
        """:meth:`read` as an array of ``be``: the int16 samples are moved as stored and scaled
        there (half the bytes of float32 to move; the same values as :meth:`read`)."""
        host = None
        if be.name == "gpu":  # decoded into a reused page-locked buffer, then moved
            host = self._host_buffer(stop - start)
        x = to_device(be, self.read_int16(start, stop, out=host)).astype(be.xp.float32)
        return x / be.xp.float32(self.scaleproc)

    #: page-locked buffers in the ring: a read ahead, a direct read, one spare
    RING = 3

    def _host_buffer(self, n_rows: int) -> np.ndarray:
        """The next page-locked buffer for ``n_rows`` samples (the ring grows when needed)."""
        need = n_rows * self.n_channels * 2
        with self._ring_lock:
            if self._ring is None or need > self._ring_bytes:
                self._ring, self._ring_bytes = HostBuffers(need, self.RING, pinned=True), need
            return self._ring.take((n_rows, self.n_channels), np.int16)


# --------------------------------------------------------------------------------------------
# stage entry points (what the rule scripts call)


def run_whitening(input_json, p: dict, out) -> None:
    """Stage ``whitening`` from the checked input description."""
    from .backend import get_backend
    from .checks import info_from_input_json, probe_from_input_json, read_input_json

    report = read_input_json(input_json)
    compute_whitening(info_from_input_json(report), probe_from_input_json(report), p,
                      get_backend(p["device"]), out)


def run_preprocess(input_json, whitening_path, p: dict, out,
                   block: tuple[int, int] = (0, 1)) -> None:
    """Stage ``preprocess`` from the checked input description and the whitening store
    (``block=(i, n)``: only block ``i`` of ``n``, see :func:`preprocess_recording`)."""
    from .backend import get_backend
    from .checks import info_from_input_json, read_input_json

    info = info_from_input_json(read_input_json(input_json))
    preprocess_recording(info, whitening_path, p, get_backend(p["device"]), out, block=block)
