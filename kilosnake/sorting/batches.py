"""Batch geometry: which samples a batch owns, which it reads, and the learning order.

Batch ``b`` owns the samples ``[b·NT, min((b+1)·NT, n_samples))``: a spike belongs to the batch
that owns its peak sample, so every sample is searched by exactly one batch. A batch is read
with ``margin`` extra samples on each side (zero outside the recording) so that spikes near its
edges are scored with full context and overlapping spikes just outside are subtracted too.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


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


def read_margin(nt0: int) -> int:
    """Samples read on each side of a batch: room for a window and its peak search (2·nt0)."""
    return 2 * int(nt0)


def open_reader(preprocessed, drift=None, be=None):
    """The reader of the whitened traces, with the drift taken out when ``drift`` is given.

    Parameters
    ----------
    preprocessed : str or Path
        ``preprocessed.zarr``.
    drift : str or Path, optional
        ``drift.zarr``; reads then go through :class:`kilosnake.drift.DriftCorrectedReader`.
    be : Backend, optional
        Where the drift correction's matrix products run.

    Returns
    -------
    PreprocessedReader or DriftCorrectedReader
    """
    if drift:
        from ..drift import DriftCorrectedReader

        return DriftCorrectedReader(preprocessed, drift, backend=be)
    from ..preprocess import PreprocessedReader

    return PreprocessedReader(preprocessed)


def read_batch(reader, window: BatchWindow):
    """Whitened samples ``[read_start, read_stop)`` of a batch (float32, host)."""
    return reader.read(window.read_start, window.read_stop)


def prefetching(reader, windows, be=None):
    """``reader`` reading ``windows`` (batch windows or ``(start, stop)`` pairs, in that order)
    one ahead on a background thread (:class:`kilosnake.prefetch.Prefetching`); with ``be``,
    its reads return arrays of that backend (``read_device``: int16 moved, scaled there)."""
    import functools

    from ..prefetch import Prefetching

    keys = [(w.read_start, w.read_stop) if isinstance(w, BatchWindow) else (int(w[0]), int(w[1]))
            for w in windows]
    read = functools.partial(reader.read_device, be) if be is not None else None
    return Prefetching(reader, keys, read)


def learning_order(n: int, seed: int) -> np.ndarray:
    """The seeded random permutation of batches visited once each during learning."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def snippet_batches(n: int, nskip: int) -> np.ndarray:
    """Batches scanned for the universal waveforms: ``0, nskip, 2·nskip, …``."""
    return np.arange(0, n, max(1, int(nskip)), dtype=np.int64)
