"""Small array helpers shared by the sorting modules."""

from __future__ import annotations

from types import ModuleType

from kilosnake.runtime.backend import Backend


def fft_module(be: Backend) -> ModuleType:
    """The FFT module of a backend: ``scipy.fft`` on the CPU (SIMD, float32-preserving, much
    faster than ``numpy.fft`` for many short transforms), ``cupy.fft`` on a GPU."""
    if be.xp.__name__ == "numpy":
        import scipy.fft

        return scipy.fft
    return be.xp.fft
