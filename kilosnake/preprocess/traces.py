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
from typing import Protocol

import numpy as np

from kilosnake.io.blocks import block_attrs
from kilosnake.io.input_json import info_from_input_json, read_input_json
from kilosnake.io.prefetch import (
    HostBuffers,
    Prefetching,
    RawBatches,
    WritingBehind,
    pinning_pays,
)
from kilosnake.io.probe import probe_from_store, write_probe_arrays
from kilosnake.io.recording import RawRecording, RecordingInfo
from kilosnake.io.store import open_store, writing_store
from kilosnake.io.traces import block_batches, create_traces, n_batches
from kilosnake.preprocess import kernels
from kilosnake.preprocess.filters import (
    batch_constants,
    butterworth_sos,
    filter_margin,
    read_filtered_batch,
)
from kilosnake.runtime.backend import Backend, get_backend
from kilosnake.runtime.progress import Progress

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# the preprocess stage


def whitened_int16(x, w, scaleproc: float, be: Backend):
    """``round((x @ w) * scaleproc)`` clipped to int16, an array of ``be``: the values stored
    (the rounding in one kernel on a GPU)."""
    y = x @ be.asarray(w, dtype=be.xp.float32)
    if be.use_kernels:
        return kernels.rounded_int16(y, scaleproc)
    y *= np.float32(scaleproc)
    return be.xp.clip(be.xp.rint(y), -32768, 32767).astype(be.xp.int16)


def host_copy(y, be: Backend, out: np.ndarray | None = None) -> np.ndarray:
    """``y`` on the host (into ``out`` when given and ``y`` is on a GPU)."""
    if out is None or be.name != "gpu":
        return be.to_host(y)
    return y.get(out=out)


class BatchObserver(Protocol):
    """Something computed from every whitened batch while preprocessing writes it (e.g. the
    drift stage's spike detection), so that no later pass has to read the traces back for it.

    An observer sees exactly the int16 values stored, batch by batch in order, and writes what
    it made into the preprocessed store.
    """

    def start(self, probe, NT: int, n_samples: int, scaleproc: float, be: Backend) -> None:
        """Called once, before the first batch."""

    def batches(self, owned: range, n_batches: int) -> range:
        """The batches to compute: the ``owned`` ones written to the store, and any neighbours
        the observer needs beside them (computed, shown to the observer, not written)."""

    def observe(self, b: int, whitened, owned: bool) -> None:
        """Batch ``b``'s whitened int16 samples (an array of the backend)."""

    def write(self, group) -> None:
        """Called once after the last batch, with the store being written."""


def preprocess_recording(
    info: RecordingInfo,
    whitening_path,
    p: dict,
    be: Backend,
    out,
    progress_every_s: float = 10.0,
    block: tuple[int, int] = (0, 1),
    observer: BatchObserver | None = None,
) -> None:
    """The ``preprocess`` stage: every batch filtered and whitened → ``preprocessed.zarr``.

    ``observer`` (:class:`BatchObserver`) sees every whitened batch and adds its results to the
    store.

    ``block=(i, n)`` with ``n > 1`` writes only the batches of block ``i`` of ``n``
    (:func:`kilosnake.io.traces.block_batches`): a block store whose traces start at its first
    batch, which :func:`kilosnake.preprocess.gather.gather_preprocessed` joins without a copy.
    """

    wg = open_store(whitening_path)
    probe = probe_from_store(wg)
    w, offsets = wg["whitening"][...], wg["channel_offset"][...]
    rec = RawRecording(info)
    NT = p["NT"]
    nb = n_batches(rec.n_samples, NT)
    sos = butterworth_sos(p["fshigh"], info.sample_rate, p["fslow"], be)
    margin = filter_margin(p["fshigh"], info.sample_rate, p["ntbuff"])
    offsets, sos = batch_constants(offsets, sos, be)
    w = be.asarray(w, dtype=be.xp.float32)  # on the device once, not with every batch
    logger.info(
        "preprocessing %d samples x %d channels in %d batches of %d (margin %d)",
        rec.n_samples,
        probe.n_channels,
        nb,
        NT,
        margin,
    )
    attrs = {
        "scaleproc": p["scaleproc"],
        "NT": NT,
        "sample_rate": info.sample_rate,
        "n_samples": rec.n_samples,
        "n_channels_total": info.n_channels_total,
        "dat": info.path,
        "dtype": info.dtype,
        "filter_margin": margin,
    }
    batch_range = block_batches(nb, n_blocks=block[1], block=block[0])
    first, stop = (
        min(batch_range.start * NT, rec.n_samples),
        min(batch_range.stop * NT, rec.n_samples),
    )
    if block[1] > 1:
        attrs.update(block_attrs(*block, batch_range, NT, rec.n_samples))
        logger.info(
            "block %d of %d: batches %d to %d",
            block[0],
            block[1],
            batch_range.start,
            batch_range.stop - 1,
        )
    progress = Progress(len(batch_range), "preprocess", logger, every_s=progress_every_s)
    with progress, writing_store(out, "preprocess", p, be.name, p.get("seed"), attrs) as g:
        traces = create_traces(g, stop - first, probe.n_channels, NT)
        write_probe_arrays(g, probe)
        # the next batch is read, and the last ones encoded and written (a thread per chunk),
        # while this one computes; results go through a ring of reused host buffers
        computed = batch_range
        if observer is not None:
            observer.start(probe, NT, rec.n_samples, p["scaleproc"], be)
            computed = observer.batches(batch_range, nb)
        raw_batches = RawBatches(rec, probe.chan_map, NT, margin, be, n_reads=len(computed))
        ahead = Prefetching(raw_batches, [(b,) for b in computed])
        depth = 2
        # reused result buffers on a GPU, page-locked for a long recording (on the CPU the
        # result is already a host array)
        results = (
            HostBuffers(NT * probe.n_channels * 2, depth + 2, pinned=pinning_pays(len(computed)))
            if be.name == "gpu"
            else None
        )
        with ahead, WritingBehind(depth, workers=max(1, NT // traces.chunks[0])) as behind:
            for b in computed:
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
                y = whitened_int16(x, w, p["scaleproc"], be)
                owned = b in batch_range
                if owned:
                    out = None if results is None else results.take(x.shape, np.int16)
                    behind.write_rows(traces, b * NT - first, host_copy(y, be, out))
                    progress.update()
                if observer is not None:
                    observer.observe(b, y, owned)
        if observer is not None:
            observer.write(g)


def run_preprocess(
    input_json,
    whitening_path,
    p: dict,
    out,
    block: tuple[int, int] = (0, 1),
    observer: BatchObserver | None = None,
) -> None:
    """Stage ``preprocess`` from the checked input description and the whitening store
    (``block=(i, n)``: only block ``i`` of ``n``; ``observer``: see
    :func:`preprocess_recording`)."""

    info = info_from_input_json(read_input_json(input_json))
    be = get_backend(p["device"])
    preprocess_recording(info, whitening_path, p, be, out, block=block, observer=observer)
