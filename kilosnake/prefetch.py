"""Reading ahead: the next read of a loop runs on a background thread while the current batch
is being computed on.

Reading a batch (file reads, Zarr decompression) releases the GIL, so it overlaps with the
array work on the batch in hand; with CuPy that work is on the GPU and the host thread mostly
waits, so reading ahead hides most of the reading time.
"""
from __future__ import annotations

import concurrent.futures
import sys


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
            1, thread_name_prefix="prefetch", initializer=use_device_of_this_thread())
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


class WritingBehind:
    """Writes (``target[index] = value``) done in order on a background thread, at most
    ``depth`` waiting, so encoding and writing one batch overlaps the computation of the next.

    Use as a context manager: leaving it waits for every write and re-raises the first error.
    """

    def __init__(self, depth: int = 2):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self._pending: list[concurrent.futures.Future] = []
        self._depth = depth

    def write(self, target, index, value) -> None:
        while len(self._pending) >= self._depth:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(target.__setitem__, index, value))

    def wait(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class RawBatches:
    """Batch ``b`` of a raw recording with ``margin`` samples each side, on ``chan_map``: the
    read that preprocessing does for every batch, in a form :class:`Prefetching` can key."""

    def __init__(self, rec, chan_map, NT: int, margin: int):
        self.rec, self.chan_map, self.NT, self.margin = rec, chan_map, int(NT), int(margin)

    def read(self, b: int):
        start, stop = b * self.NT, min((b + 1) * self.NT, self.rec.n_samples)
        return self.rec.read(start - self.margin, stop + self.margin, self.chan_map)
