"""Compiling CUDA kernels once per process (CuPy's ``RawKernel``; its on-disk cache then also
spares the compiler in later processes)."""

from __future__ import annotations

import functools


@functools.cache
def compiled_kernel(name: str, source: str, options: tuple = ()):
    """The kernel ``name`` of the CUDA ``source``, compiled with ``options`` the first time."""
    import cupy

    return cupy.RawKernel(source, name, options=options)
