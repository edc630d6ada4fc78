"""Ordered maps over forked worker processes."""

import os
import time

import numpy as np
import pytest

from kilosnake.runtime import parallel


def slow_square(x):
    time.sleep(0.02 * (x % 3 == 0))  # later items often finish first
    return x * x, os.getpid()


def scaled(table, i):
    return float(table.values[i] * table.scale)


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


class Unpicklable:
    """Read-only data that cannot be pickled: it must reach the workers by the fork."""

    def __init__(self, values, scale):
        self.values, self.scale = values, scale

    def __reduce__(self):
        raise TypeError("not picklable")


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_in_input_order(workers):
    out = parallel.map_ordered(slow_square, range(12), workers)
    assert [r for r, _ in out] == [x * x for x in range(12)]
    pids = {pid for _, pid in out}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_inherited_data_reaches_the_workers_without_pickling():
    table = Unpicklable(np.arange(10.0), 2.5)
    serial = parallel.map_ordered(scaled, range(10), 1, inherited=table)
    assert parallel.map_ordered(scaled, range(10), 3, inherited=table) == serial
    assert serial == [2.5 * i for i in range(10)]
    assert parallel._INHERITED == {}


def test_imap_draws_items_a_few_ahead_only():
    drawn = []

    def items():
        for i in range(40):
            drawn.append(i)
            yield i

    results = parallel.imap_ordered(slow_square, items(), 2, ahead=3)
    assert next(results)[0] == 0
    assert len(drawn) <= 5
    assert [r for r, _ in results] == [x * x for x in range(1, 40)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_item_raises_in_the_caller(workers):
    with pytest.raises(ValueError, match="three"):
        parallel.map_ordered(fail_on_three, range(6), workers)


def test_pool_serves_several_maps_and_restores_blas_threads():
    controls = parallel._openblas_thread_controls()
    before = [get() for get, _ in controls]
    with parallel.WorkerPool(2) as pool:
        assert [r for r, _ in pool.map(slow_square, range(5))] == [0, 1, 4, 9, 16]
        assert [get() for get, _ in controls] == [1] * len(controls)
        assert [r for r, _ in pool.map(slow_square, [7])] == [49]
        assert [r for r, _ in pool.map(slow_square, [2, 3])] == [4, 9]
    assert [get() for get, _ in controls] == before


def test_a_worker_is_started_per_share_of_spikes_up_to_the_limit():
    share = parallel.SPIKES_PER_WORKER
    assert parallel.workers_for(0, 8) == 1
    assert parallel.workers_for(share - 1, 8) == 1
    assert parallel.workers_for(3 * share, 8) == 3
    assert parallel.workers_for(100 * share, 8) == 8
    assert parallel.workers_for(100 * share, 0) == 1
