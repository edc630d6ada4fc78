"""GPU memory: the cap (``gpu_memory_gb``), block sizes chosen from it, and halving on
out-of-memory errors.

A stage on the GPU holds one batch and the arrays that grow with the number of templates
(projections ``T × Nfilt``, template cross-correlations ``Nfilt × (2·nt0−1) × Nfilt``); the
scratch space of the matching is bounded by block sizes (templates projected together, spikes
subtracted together, cross-correlation rows computed together). :func:`apply_cap` limits
CuPy's memory pool to ``gpu_memory_gb`` (when set); :data:`blocks` holds the current block
sizes, sized from the budget at the start of a stage (:func:`size_blocks_for`); and
:func:`retry_on_out_of_memory` reruns a batch with every block halved when the GPU runs out of
memory, logging it, until the blocks reach their minimum (then the error names the fix).

Block sizes only change how work is split, not what is computed: results agree up to the
rounding of differently ordered sums.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from kilosnake.errors import KilosnakeError

logger = logging.getLogger(__name__)


GB = 1 << 30


@dataclasses.dataclass
class BlockSizes:
    """Scratch-space bounds of the matching pursuit and template comparisons."""

    templates: int = 32  # templates projected together
    spikes: int = 256  # spikes subtracted from data and projections together
    ctc_bytes: int = 128 << 20  # complex scratch of one block of cross-correlations

    MIN = (4, 16, 4 << 20)

    def halve(self) -> bool:
        """Halve every block not yet at its minimum; False when none could shrink."""
        new = [max(lo, v // 2) for v, lo in zip(self.values(), self.MIN)]
        changed = new != list(self.values())
        self.templates, self.spikes, self.ctc_bytes = new
        return changed

    def values(self) -> tuple[int, int, int]:
        return self.templates, self.spikes, self.ctc_bytes


#: the block sizes in use (one stage per process)
blocks = BlockSizes()


def cupy_module():
    """CuPy if it has been imported (a GPU stage), else None."""
    return sys.modules.get("cupy")


def apply_cap(gpu_memory_gb: float | None) -> None:
    """Limit CuPy's memory pool to ``gpu_memory_gb`` (no-op without CuPy or a cap)."""
    cupy = cupy_module()
    if cupy is None or not gpu_memory_gb:
        return
    cupy.get_default_memory_pool().set_limit(size=int(float(gpu_memory_gb) * GB))
    logger.info("GPU memory capped at %.2f GB (gpu_memory_gb)", float(gpu_memory_gb))


def budget_bytes() -> int | None:
    """Bytes a stage may use on the GPU: the pool's limit if capped, else what is free on the
    device plus what the pool holds unused; None without CuPy."""
    cupy = cupy_module()
    if cupy is None:
        return None
    pool = cupy.get_default_memory_pool()
    free, _ = cupy.cuda.runtime.memGetInfo()
    available = free + pool.free_bytes()
    limit = pool.get_limit()
    return min(limit, available) if limit else available


def size_blocks_for(per_template_bytes: float, n_templates: int) -> None:
    """Shrink the template block until a block's scratch fits in a quarter of the budget.

    ``per_template_bytes`` is the scratch one template of a projection block needs.
    """
    budget = budget_bytes()
    if budget is None:
        return
    while (
        blocks.templates > BlockSizes.MIN[0] and blocks.templates * per_template_bytes > budget / 4
    ):
        blocks.templates //= 2
    logger.info(
        "GPU budget %.2f GB for %d templates: %d templates per projection block",
        budget / GB,
        n_templates,
        blocks.templates,
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is CuPy's (or cuFFT's / cuBLAS's) out-of-memory error."""
    cupy = cupy_module()
    if cupy is not None and isinstance(exc, cupy.cuda.memory.OutOfMemoryError):
        return True
    text = str(exc)
    return (
        "CUFFT_ALLOC_FAILED" in text
        or "CUBLAS_STATUS_ALLOC_FAILED" in text
        or "out of memory" in text.lower()
    )


def free_pool() -> None:
    cupy = cupy_module()
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.fft.config.get_plan_cache().clear()


def retry_on_out_of_memory(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, rerun with halved blocks after each GPU out-of-memory error.

    Raises
    ------
    KilosnakeError
        When the smallest blocks still do not fit, naming the fix.
    """
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_pool()
            if not blocks.halve():
                raise KilosnakeError(
                    f"{what}: the GPU ran out of memory even with the smallest blocks "
                    f"({exc.__class__.__name__}). Fix: raise gpu_memory_gb (or leave it unset "
                    "to use all free GPU memory), free the GPU of other programs, or use a "
                    "shorter batch (NT)."
                ) from exc
            logger.warning(
                "%s: GPU out of memory; retrying with smaller blocks (templates %d, "
                "spikes %d, cross-correlation %d MB)",
                what,
                blocks.templates,
                blocks.spikes,
                blocks.ctc_bytes >> 20,
            )
