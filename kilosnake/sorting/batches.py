"""Batch geometry: which samples a batch owns, which it reads, and the learning order.

Batch ``b`` owns the samples ``[b·NT, min((b+1)·NT, n_samples))``: a spike belongs to the batch
that owns its peak sample, so every sample is searched by exactly one batch. A batch is read
with ``margin`` extra samples on each side (zero outside the recording) so that spikes near its
edges are scored with full context and overlapping spikes just outside are subtracted too.
"""

from __future__ import annotations

import numpy as np


def read_margin(nt0: int) -> int:
    """Samples read on each side of a batch: room for a window and its peak search (2·nt0)."""
    return 2 * int(nt0)


def learning_order(n: int, seed: int) -> np.ndarray:
    """The seeded random permutation of batches visited once each during learning."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def snippet_batches(n: int, nskip: int) -> np.ndarray:
    """Batches scanned for the universal waveforms: ``0, nskip, 2·nskip, …``."""
    return np.arange(0, n, max(1, int(nskip)), dtype=np.int64)
