"""Reading ahead: the next read of a loop runs on a background thread while the current batch
is being computed on.

Reading a batch (file reads, Zarr decompression) releases the GIL, so it overlaps with the
array work on the batch in hand; with CuPy that work is on the GPU and the host thread mostly
waits, so reading ahead hides most of the reading time.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading

import numpy as np

from kilosnake.io.recording import column_selector, select_columns


class Prefetching:
    """A reader whose ``read(*key)`` calls, made in a known order, are done one ahead.

    Each ``read`` whose arguments are the next expected key returns the result read ahead and
    starts reading the following key; any other call is served directly. ``read`` replaces the
    reader's own ``read`` (e.g. a method that returns device arrays). Other attributes are
    those of the wrapped reader. Results are the wrapped reader's, so reading ahead changes
    nothing but the time.
    """

    def __init__(self, reader, keys, read=None):
        self._reader = reader
        self._read = read or reader.read
        self._keys = [tuple(k) for k in keys]
        self._next = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="prefetch", initializer=use_device_of_this_thread()
        )
        self._pending = self._submit()

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def _submit(self):
        if self._next >= len(self._keys):
            return None
        key = self._keys[self._next]
        self._next += 1
        return key, self._pool.submit(self._read, *key)

    def read(self, *key):
        if self._pending is not None and self._pending[0] == key:
            data = self._pending[1].result()
            self._pending = self._submit()
            return data
        return self._read(*key)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def use_device_of_this_thread():
    """A thread initialiser that selects the calling thread's CUDA device (CuPy's current
    device is per thread; readers that correct drift compute on it), or None without CuPy."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    device = cupy.cuda.runtime.getDevice()
    return lambda: cupy.cuda.runtime.setDevice(device)


def use_device_and_own_stream():
    """A thread initialiser like :func:`use_device_of_this_thread` that also gives the thread a
    CUDA stream of its own, one that does not wait for the default stream: its kernels and its
    waits for them then run beside another thread's. Work it reads from another stream must
    wait for that stream first (:func:`stream_marker`, :func:`wait_for_marker`)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    device = cupy.cuda.runtime.getDevice()

    def initialise():
        cupy.cuda.runtime.setDevice(device)
        # held by the thread itself (a stream lives as long as its object), freed with it
        _THIS_THREAD.own_stream = cupy.cuda.Stream(non_blocking=True)
        _THIS_THREAD.own_stream.use()

    return initialise


#: per-thread state of this module's thread initialisers
_THIS_THREAD = threading.local()


def stream_marker(be):
    """A mark of the work queued so far on this thread's current stream (None on the CPU)."""
    if be.name != "gpu":
        return None
    event = be.xp.cuda.Event(disable_timing=True)
    event.record()
    return event


def wait_for_marker(marker) -> None:
    """Make this thread's current stream wait for the work a :func:`stream_marker` marked."""
    if marker is not None:
        sys.modules["cupy"].cuda.get_current_stream().wait_event(marker)


class WritingBehind:
    """Writes (or any calls, :meth:`call`) done on background threads, at most ``depth`` batches
    waiting, so encoding and writing one batch overlaps the computation of the next.

    :meth:`write_rows` splits a batch at the target's chunk edges and writes the chunks on
    ``workers`` threads: each write then covers whole chunks of its own (encoded without an
    intermediate copy), and the chunks are encoded in parallel. Use as a context manager:
    leaving it waits for every write and re-raises the first error.
    """

    def __init__(self, depth: int = 2, workers: int = 1):
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, workers), thread_name_prefix="write-behind"
        )
        self._pending: list[list[concurrent.futures.Future]] = []
        self._depth = depth

    def _wait_for_room(self) -> None:
        while len(self._pending) >= self._depth:
            for future in self._pending.pop(0):
                future.result()

    def call(self, fn, *args) -> None:
        """``fn(*args)`` on the background threads (in call order with one worker)."""
        self._wait_for_room()
        self._pending.append([self._pool.submit(fn, *args)])

    def write_rows(self, target, at: int, value) -> None:
        """``target[at : at + len(value)] = value``, one write per chunk of ``target`` rows
        (``at`` on a chunk edge)."""
        self._wait_for_room()
        step = int(target.chunks[0])
        self._pending.append(
            [
                self._pool.submit(
                    target.__setitem__,
                    slice(at + r, at + min(r + step, len(value))),
                    value[r : r + step],
                )
                for r in range(0, len(value), step)
            ]
        )

    def wait(self) -> None:
        while self._pending:
            for future in self._pending.pop(0):
                future.result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class HostBuffers:
    """A ring of ``count`` reusable host buffers of up to ``n_bytes`` each, page-locked when
    ``pinned`` (copies to and from the GPU then run at full speed, and no fresh memory is
    faulted in batch after batch).

    A buffer handed out by :meth:`take` is handed out again ``count`` calls later: size the
    ring so that its user is done with a buffer by then.
    """

    def __init__(self, n_bytes: int, count: int, pinned: bool = False):
        self._slots = [_host_bytes(int(n_bytes), pinned) for _ in range(count)]
        self._fences: list = [None] * count
        self._next = 0

    def take(self, shape, dtype) -> np.ndarray:
        """The next buffer, viewed as a C-ordered array of ``shape`` and ``dtype`` (once the
        copy out of it that :meth:`fence` was told of has completed)."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        i = self._next
        slot = self._slots[i]
        self._next = (i + 1) % len(self._slots)
        if n > slot.size:
            raise ValueError(f"host buffer of {slot.size} bytes, need {n}")
        fence, self._fences[i] = self._fences[i], None
        if fence is not None:
            fence.synchronize()
        return slot[:n].view(dtype).reshape(shape)

    def settle(self) -> None:
        """Wait for every copy out of these buffers that :meth:`fence` was told of (before the
        buffers are dropped: page-locked memory goes back to a pool that hands it out again)."""
        for i, fence in enumerate(self._fences):
            if fence is not None:
                fence.synchronize()
                self._fences[i] = None

    def fence(self, view: np.ndarray, event) -> None:
        """Hand the buffer of ``view`` (from :meth:`take`) out again only after ``event`` (a
        CUDA event recorded after an asynchronous copy out of it) has completed."""
        at = view.__array_interface__["data"][0]
        for i, slot in enumerate(self._slots):
            start = slot.__array_interface__["data"][0]
            if start <= at < start + slot.size:
                self._fences[i] = event
                return
        raise ValueError("the array is not a view of one of these buffers")


def to_device(be, host: np.ndarray, buffers: HostBuffers | None = None):
    """``host`` (e.g. a page-locked buffer of :class:`HostBuffers`) as an array of ``be``: on a
    GPU copied straight from ``host`` (``cupy.asarray`` would first copy it into a staging
    buffer of its own).

    From page-locked memory the copy is asynchronous: with ``buffers``, the ring ``host`` was
    taken from, the ring hands that buffer out again only once the copy is done; without, this
    waits for the copy before it returns.
    """
    if be.name != "gpu":
        return be.asarray(host)
    out = be.xp.empty(host.shape, dtype=host.dtype)
    out.set(np.ascontiguousarray(host))
    copied = be.xp.cuda.Event(disable_timing=True)
    copied.record()
    if buffers is None:
        copied.synchronize()
    else:
        buffers.fence(host, copied)
    return out


#: batches a ring of page-locked buffers must serve to repay its allocation: page-locking the
#: 50 MB buffers of a 384-channel batch costs more than the copies it speeds up in a few batches
PINNED_FROM_BATCHES = 16


def pinning_pays(n_batches: int | None) -> bool:
    """Whether buffers serving ``n_batches`` batches (None: unknown, many) are worth
    page-locking (:data:`PINNED_FROM_BATCHES`)."""
    return n_batches is None or n_batches >= PINNED_FROM_BATCHES


def _host_bytes(n_bytes: int, pinned: bool) -> np.ndarray:
    if pinned:
        import cupyx

        return cupyx.empty_pinned(n_bytes, dtype=np.uint8)
    return np.empty(n_bytes, dtype=np.uint8)


class RawBatches:
    """Batch ``b`` of a raw recording with ``margin`` samples each side, on ``chan_map``: the
    read that preprocessing does for every batch, in a form :class:`Prefetching` can key.

    With a GPU backend the whole rows are read into page-locked buffers and the probe's columns
    are picked on the GPU (:meth:`on_device`): a gather of columns on the host costs more than
    reading the file.
    """

    #: host buffers in the ring: the batch being moved, the one read ahead, one spare
    RING = 3

    def __init__(self, rec, chan_map, NT: int, margin: int, be=None, n_reads: int | None = None):
        self.rec, self.NT, self.margin = rec, int(NT), int(margin)
        self.columns = column_selector(chan_map)
        self.whole_rows = be is not None and be.name == "gpu"
        self._buffers = None
        if self.whole_rows:
            row_bytes = rec.info.n_channels_total * rec.info.itemsize
            self._buffers = HostBuffers(
                (self.NT + 2 * self.margin) * row_bytes, self.RING, pinned=pinning_pays(n_reads)
            )

    def read(self, b: int):
        start, stop = b * self.NT, min((b + 1) * self.NT, self.rec.n_samples)
        start, stop = start - self.margin, stop + self.margin
        if not self.whole_rows:
            return select_columns(self.rec.read_rows(start, stop), self.columns)
        out = self._buffers.take(
            (stop - start, self.rec.info.n_channels_total), self.rec.info.dtype
        )
        return self.rec.read_rows(start, stop, out=out)

    def on_device(self, raw, be):
        """A batch from :meth:`read` on ``be``, the probe's columns only (as stored)."""
        x = to_device(be, raw, self._buffers)
        return select_columns(x, self.columns, be.xp) if self.whole_rows else x
