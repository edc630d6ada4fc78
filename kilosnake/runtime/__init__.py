"""Run-time infrastructure: the array backend (NumPy or CuPy, and whether the CUDA kernels run),
GPU memory and selection, logs, progress lines and worker pools. Imports only the base modules
(:mod:`kilosnake.params`, :mod:`kilosnake.errors`, :mod:`kilosnake.version`).
"""
