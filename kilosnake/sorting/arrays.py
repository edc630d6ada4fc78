"""Small array helpers shared by the sorting modules."""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

from kilosnake.runtime.backend import Backend


def fft_module(be: Backend):
    """The FFT functions of a backend: ``scipy.fft`` on the CPU (SIMD, float32-preserving, much
    faster than ``numpy.fft`` for many short transforms), on as many threads as the process may
    use (the transforms of a batch are split between them, each computed as on one thread, so
    the values do not depend on the count); ``cupy.fft`` on a GPU."""
    if be.xp.__name__ == "numpy":
        return _threaded_scipy_fft()
    return be.xp.fft


@functools.cache
def _threaded_scipy_fft() -> SimpleNamespace:
    import scipy.fft

    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return SimpleNamespace(
        rfft=functools.partial(scipy.fft.rfft, workers=workers),
        irfft=functools.partial(scipy.fft.irfft, workers=workers),
    )
