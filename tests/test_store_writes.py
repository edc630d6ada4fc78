"""Stores are written atomically: a store whose writer died, or that lacks its completeness
marker, is never read as complete; an error inside the writer leaves nothing behind."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

from kilosnake.io.store import IncompleteStoreError, open_store, writing_store

# --------------------------------------------------------------------------------------------
# a store whose writer was killed


SLOW_WRITER = """
import sys, time
import numpy as np
from kilosnake.io.store import writing_store
with writing_store(sys.argv[1], "test") as g:
    a = g.create_array("x", shape=(100, 10), chunks=(1, 10), dtype="float64")
    for i in range(100):
        a[i] = np.full(10, i)
        if i == 5:
            print("writing", flush=True)
        time.sleep(0.05)
"""


def test_a_store_killed_mid_write_is_never_read_as_complete(tmp_path):
    final = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(final)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = tmp_path / "out.zarr.tmp"
    assert partial.is_dir() and not final.exists()
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(partial)
    with pytest.raises(FileNotFoundError):
        open_store(final)
    with writing_store(final, "test") as g:  # a rerun replaces the leftover
        g.attrs["n"] = 1
    assert open_store(final).attrs["n"] == 1 and not partial.exists()


def test_a_store_without_its_marker_is_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "copied.zarr"), mode="w", zarr_format=3)
    g.create_array("x", shape=(3,), dtype="int64")[...] = np.arange(3)
    with pytest.raises(IncompleteStoreError):
        open_store(tmp_path / "copied.zarr")


def test_an_error_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with writing_store(tmp_path / "out.zarr", "test") as g:
            g.create_array("x", shape=(3,), dtype="int64")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
