"""GPU memory budget: block sizes, halving on out-of-memory errors, and a capped pool."""

import dataclasses

import numpy as np
import pytest

from kilosnake.errors import KilosnakeError
from kilosnake.runtime import gpu_memory
from kilosnake.sorting import matching, svd, toy, waveforms

NT0, NT0MIN = 61, 20


@pytest.fixture(autouse=True)
def default_blocks():
    saved = dataclasses.replace(gpu_memory.blocks)
    yield
    gpu_memory.blocks.templates, gpu_memory.blocks.spikes, gpu_memory.blocks.ctc_bytes = (
        saved.values()
    )


class FakeOutOfMemory(RuntimeError):
    pass


def test_retry_halves_blocks_until_the_call_fits():
    calls = []

    def needs_small_blocks():
        calls.append(gpu_memory.blocks.templates)
        if gpu_memory.blocks.templates > 8:
            raise FakeOutOfMemory("cudaErrorMemoryAllocation: out of memory")
        return "done"

    assert gpu_memory.retry_on_out_of_memory("test", needs_small_blocks) == "done"
    assert calls == [32, 16, 8]


def test_retry_gives_up_with_the_fix_when_blocks_are_smallest():
    def never_fits():
        raise FakeOutOfMemory("out of memory allocating 1 GB")

    with pytest.raises(KilosnakeError, match="gpu_memory_gb"):
        gpu_memory.retry_on_out_of_memory("test", never_fits)
    assert gpu_memory.blocks.values() == gpu_memory.BlockSizes.MIN


def test_other_errors_are_not_retried():
    def broken():
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        gpu_memory.retry_on_out_of_memory("test", broken)
    assert gpu_memory.blocks.templates == 32


def _peel(be):
    rec = toy.make_toy_recording(n_channels=16, duration_s=1.0, n_units=6, rate_hz=25, seed=3)
    iC, _, _ = waveforms.closest_channels(rec.probe.xc, rec.probe.yc, 32, 30.0)
    Ka, Kb = waveforms.kriging_kernels(NT0, NT0MIN, 10, 1.0)
    lr = svd.factorise_templates(be, be.asarray(rec.waveforms), iC, Ka, Kb, NT0MIN)
    tset = matching.make_template_set(be, lr.W, lr.U, lr.mu)
    result = matching.peel(be, be.asarray(rec.traces), tset, 6.0, 10.0)
    return be.to_host(result.onset), be.to_host(result.template), be.to_host(result.amplitude)


def test_smaller_blocks_find_the_same_spikes(be):
    onset, template, amplitude = _peel(be)
    while gpu_memory.blocks.halve():
        pass
    onset2, template2, amplitude2 = _peel(be)
    np.testing.assert_array_equal(onset, onset2)
    np.testing.assert_array_equal(template, template2)
    np.testing.assert_allclose(amplitude, amplitude2, rtol=1e-4)


@pytest.mark.gpu
def test_a_capped_pool_raises_out_of_memory_that_retry_recognises(be):
    if be.name != "gpu":
        pytest.skip("CuPy only")
    cupy = be.xp
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    gpu_memory.apply_cap(0.25)
    try:
        assert gpu_memory.budget_bytes() <= 0.25 * gpu_memory.GB
        with pytest.raises(Exception) as info:
            cupy.empty(int(0.5 * gpu_memory.GB), dtype=cupy.uint8)
        assert gpu_memory.is_out_of_memory(info.value)
    finally:
        pool.set_limit(size=0)
