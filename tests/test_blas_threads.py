"""One BLAS thread around small linear algebra: set while any block runs, restored after."""

import threading

import numpy as np
import pytest

from kilosnake.runtime.backend import cpu_backend
from kilosnake.runtime.parallel import _openblas_thread_controls, one_blas_thread

BE = cpu_backend()  # loads SciPy's BLAS too, before the counts are read


def blas_threads() -> list[int]:
    return [get() for get, _ in _openblas_thread_controls()]


def test_one_thread_inside_the_count_found_before_restored_after():
    before = blas_threads()
    assert before  # NumPy's OpenBLAS is loaded
    if max(before) == 1:
        pytest.skip("OpenBLAS runs one thread here already")
    with one_blas_thread(BE):
        assert blas_threads() == [1] * len(before)
        with one_blas_thread():  # nested: still one, and the outer exit restores
            np.linalg.eigh(np.eye(4))
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_blocks_of_two_threads_overlapping_restore_the_count_once_both_left():
    before = blas_threads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with one_blas_thread():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with one_blas_thread():
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = blas_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["after the first left"] == [1] * len(before)
    assert blas_threads() == before


def test_a_block_in_another_thread_than_the_last_one_still_sets_one_thread():
    with one_blas_thread():
        pass
    seen = {}

    def block():
        with one_blas_thread():
            seen["inside"] = blas_threads()

    t = threading.Thread(target=block)
    t.start()
    t.join(10)
    assert seen["inside"] and set(seen["inside"]) == {1}


def test_every_stage_runs_on_one_blas_thread(tmp_path, monkeypatch):
    import kilosnake.workflow.stages as stages

    before = blas_threads()
    if max(before) == 1:
        pytest.skip("OpenBLAS runs one thread here already")
    seen = {}
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "merge", lambda job: seen.update(n=blas_threads()))
    job = stages.StageJob("merge", {}, {}, [], [], {"p": {"device": "cpu"}}, str(tmp_path / "l"))
    stages.run_stage(job)
    assert seen["n"] == [1] * len(before)
    assert blas_threads() == before
