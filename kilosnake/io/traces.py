"""preprocessed.zarr's traces: the layout of the ``traces`` array and the one helper that creates
it (:func:`create_traces`), readers that serve whitened int16 traces as float32 windows from one
store or from the block stores of a scattered run, and batch geometry.

Batch ``b`` owns the samples ``[b·NT, min((b+1)·NT, n_samples))``: a spike belongs to the batch
that owns its peak sample, so every sample is searched by exactly one batch. A batch is read
with ``margin`` extra samples on each side (zero outside the recording) so that spikes near its
edges are scored with full context and overlapping spikes just outside are subtracted too.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec

from kilosnake.io.prefetch import HostBuffers, Prefetching, to_device
from kilosnake.io.probe import probe_from_store
from kilosnake.io.store import (
    open_store,
    read_rows_into,
)
from kilosnake.runtime.backend import Backend

#: codec of the int16 traces: on whitened int16 traces lz4 after bit-shuffling
#: compresses as well as zstd (about 1.45x) and encodes and decodes about twice as fast
TRACE_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
#: a batch of traces is stored as up to this many chunks, which Zarr encodes and decodes in
#: parallel threads (each chunk's codec runs on one thread)
TRACE_CHUNKS_PER_BATCH = 8
#: ... of at least this many samples each
MIN_TRACE_CHUNK = 4096


def trace_chunks(NT: int, n_channels: int) -> tuple[int, int]:
    """Chunk shape of a traces array: a whole divisor of the batch, so chunk edges fall on batch
    edges and a batch is read and written as several chunks at once."""
    for k in range(TRACE_CHUNKS_PER_BATCH, 1, -1):
        if NT % k == 0 and NT // k >= MIN_TRACE_CHUNK:
            return NT // k, n_channels
    return NT, n_channels


def create_traces(group, n_samples: int, n_channels: int, NT: int):
    """Create the int16 ``traces`` array (time × channel) of a preprocessed store.

    Chunks divide the batch (:func:`trace_chunks`), the codec is :data:`TRACE_CODEC`, absent
    values read as 0 and every chunk is written, zeros included (the chunk files of a block
    store are those of the same samples in a whole store). The one place this layout is chosen:
    every writer of traces (preprocess, drift correction, test and benchmark stores) uses it.
    """
    return group.create_array(
        "traces",
        shape=(int(n_samples), int(n_channels)),
        dtype="int16",
        chunks=trace_chunks(int(NT), int(n_channels)),
        compressors=TRACE_CODEC,
        fill_value=0,
        dimension_names=("time", "channel"),
        config={"write_empty_chunks": True},
    )


class PreprocessedReader:
    """Windows of the preprocessed (whitened) traces as float32, zero-padded outside."""

    def __init__(self, path):

        self.path = Path(path)
        self.group = open_store(path)
        self.traces = open_traces(self.group, path)  # one array, or a scattered run's blocks
        attrs = self.group.attrs
        self.scaleproc = float(attrs["scaleproc"])
        self.NT = int(attrs["NT"])
        self.sample_rate = float(attrs["sample_rate"])
        self.n_samples, self.n_channels = self.traces.shape
        self.probe = probe_from_store(self.group)
        self._ring, self._ring_bytes, self._ring_lock = None, 0, threading.Lock()

    def read_int16(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) as stored (int16), zero-padded outside the recording (into
        ``out``, C-ordered ``(stop - start, n_channels)``, when given)."""
        lo, hi = max(start, 0), min(stop, self.n_samples)
        if out is None:
            out = np.zeros((stop - start, self.n_channels), dtype=np.int16)
        else:
            out[: max(0, lo - start)] = 0
            out[max(0, hi - start) :] = 0
        if hi > lo:
            read_rows_into(self.traces, lo, hi, out[lo - start : hi - start])
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) in whitened units (float32)."""
        return self.read_int16(start, stop).astype(np.float32) / np.float32(self.scaleproc)

    def read_device(self, be: Backend, start: int, stop: int):
        """:meth:`read` as an array of ``be``: the int16 samples are moved as stored and scaled
        there (half the bytes of float32 to move; the same values as :meth:`read`)."""
        host, ring = None, None
        if be.name == "gpu":  # decoded into a reused page-locked buffer, then moved
            host, ring = self._host_buffer(stop - start)
        x = to_device(be, self.read_int16(start, stop, out=host), ring).astype(be.xp.float32)
        return x / be.xp.float32(self.scaleproc)

    #: page-locked buffers in the ring: a read ahead, a direct read, one spare
    RING = 3

    def _host_buffer(self, n_rows: int) -> tuple[np.ndarray, HostBuffers]:
        """The next page-locked buffer for ``n_rows`` samples and its ring (which grows when
        needed)."""
        need = n_rows * self.n_channels * 2
        with self._ring_lock:
            if self._ring is None or need > self._ring_bytes:
                if self._ring is not None:
                    self._ring.settle()
                self._ring, self._ring_bytes = HostBuffers(need, self.RING, pinned=True), need
            return self._ring.take((n_rows, self.n_channels), np.int16), self._ring


def block_batches(n_batches: int, n_blocks: int, block: int) -> range:
    """Batches of block ``block`` out of ``n_blocks`` contiguous, near-equal ranges.

    Block ``i`` gets ``[i·nb // n, (i+1)·nb // n)``; with more blocks than batches some blocks
    are empty.
    """
    if n_blocks < 1 or not 0 <= block < n_blocks:
        raise ValueError(f"block {block} of {n_blocks} does not exist")
    return range(block * n_batches // n_blocks, (block + 1) * n_batches // n_blocks)


class BlockTraces:
    """The traces of a scattered ``preprocessed.zarr``: ``traces[lo:hi]`` read from its blocks.

    Supports what the readers need: ``shape``, ``dtype``, ``chunks`` and slicing along time.
    """

    def __init__(self, group, path):
        path = Path(path)
        self.blocks = []
        for b in group.attrs["blocks"]:
            store = open_store(path.parent / b["path"])
            self.blocks.append((int(b["start"]), int(b["stop"]), store["traces"]))
        n_channels = int(group.attrs["n_channels"])
        self.shape = (int(group.attrs["n_samples"]), n_channels)
        self.dtype = np.dtype(np.int16)
        self.chunks = (
            self.blocks[0][2].chunks if self.blocks else (int(group.attrs["NT"]), n_channels)
        )

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("BlockTraces supports time slices [lo:hi] only")
        lo, hi, _ = key.indices(self.shape[0])
        return self.read_into(lo, hi, np.zeros((max(0, hi - lo), self.shape[1]), self.dtype))

    def read_into(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """Rows ``[lo, hi)`` into ``out`` (each block's part decoded in place)."""
        for start, stop, traces in self.blocks:
            a, z = max(lo, start), min(hi, stop)
            if z > a:
                read_rows_into(traces, a - start, z - start, out[a - lo : z - lo])
        return out


def open_traces(group, path):
    """The ``traces`` array of a preprocessed store, or :class:`BlockTraces` of a scattered
    one."""
    if "blocks" in group.attrs:
        return BlockTraces(group, path)
    return group["traces"]


@dataclasses.dataclass(frozen=True)
class BatchWindow:
    """Samples of one batch: owned ``[start, stop)``, read ``[read_start, read_stop)``."""

    index: int
    start: int
    stop: int
    read_start: int
    read_stop: int

    def owns(self, times):
        """Mask of absolute sample times owned by this batch."""
        return (times >= self.start) & (times < self.stop)


def n_batches(n_samples: int, NT: int) -> int:
    """Number of batches of ``NT`` samples covering the recording (the last may be short)."""
    return int(math.ceil(n_samples / NT))


def batch_window(b: int, n_samples: int, NT: int, margin: int) -> BatchWindow:
    """The window of batch ``b``."""
    start, stop = b * NT, min((b + 1) * NT, n_samples)
    return BatchWindow(b, start, stop, start - margin, (b + 1) * NT + margin)


def read_batch(reader, window: BatchWindow):
    """Whitened samples ``[read_start, read_stop)`` of a batch (float32, host)."""
    return reader.read(window.read_start, window.read_stop)


def prefetching(reader, windows, be=None):
    """``reader`` reading ``windows`` (batch windows or ``(start, stop)`` pairs, in that order)
    one ahead on a background thread (:class:`kilosnake.io.prefetch.Prefetching`); with ``be``,
    its reads return arrays of that backend (``read_device``: int16 moved, scaled there)."""
    import functools

    keys = [
        (w.read_start, w.read_stop) if isinstance(w, BatchWindow) else (int(w[0]), int(w[1]))
        for w in windows
    ]
    read = functools.partial(reader.read_device, be) if be is not None else None
    return Prefetching(reader, keys, read)
