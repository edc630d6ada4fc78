"""The ring of reusable host buffers waits for the copies out of a buffer before reusing it."""

import numpy as np
import pytest

from kilosnake.io.prefetch import HostBuffers


class FakeCopy:
    """Stands for a CUDA event recorded after an asynchronous copy: records being waited for."""

    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def synchronize(self):
        self.log.append(self.name)


def test_a_buffer_is_handed_out_again_only_after_its_copy_is_done():
    log = []
    ring = HostBuffers(64, 2)
    a = ring.take((4,), np.int32)
    ring.fence(a, FakeCopy(log, "a"))
    b = ring.take((8,), np.int16)  # the other buffer: nothing to wait for
    assert log == []
    ring.fence(b[2:], FakeCopy(log, "b"))  # a view inside the buffer names it too
    again = ring.take((4,), np.int32)
    assert log == ["a"]
    assert again.__array_interface__["data"][0] == a.__array_interface__["data"][0]
    ring.take((4,), np.int32)
    assert log == ["a", "b"]
    ring.take((4,), np.int32)  # waited for once only
    assert log == ["a", "b"]


def test_settle_waits_for_every_copy_and_foreign_arrays_are_refused():
    log = []
    ring = HostBuffers(16, 3)
    for name in "xyz":
        ring.fence(ring.take((2,), np.float64), FakeCopy(log, name))
    ring.settle()
    assert sorted(log) == ["x", "y", "z"]
    ring.settle()
    assert len(log) == 3
    with pytest.raises(ValueError, match="not a view"):
        ring.fence(np.zeros(2), FakeCopy(log, "w"))
