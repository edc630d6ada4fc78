"""Rows of a Blosc-compressed traces array decoded straight into the caller's buffer: the same
values as Zarr's reads, at any window; arrays of another layout left to Zarr."""

import numpy as np
import pytest
import zarr

from kilosnake.io.chunk_reads import chunk_folder, read_rows_direct
from kilosnake.io.store import read_rows_into
from kilosnake.io.traces import create_traces

NT, C = 8192, 12


@pytest.fixture()
def traces(tmp_path):
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    n = 5 * NT + 1234  # the last chunk partly filled
    a = create_traces(group, n, C, NT)
    values = np.random.default_rng(0).integers(-3000, 3000, (n, C)).astype(np.int16)
    a[:] = values
    return a, values


@pytest.mark.parametrize(
    "lo, hi",
    [(0, NT), (0, 100), (NT - 30, 2 * NT + 30), (4000, 4001), (5 * NT, 5 * NT + 1234), (7, 42000)],
)
def test_direct_reads_equal_zarrs(traces, lo, hi):
    a, values = traces
    assert chunk_folder(a) is not None
    out = np.full((hi - lo, C), 77, np.int16)
    assert read_rows_direct(a, lo, hi, out)
    np.testing.assert_array_equal(out, values[lo:hi])
    np.testing.assert_array_equal(out, a[lo:hi])


def test_a_window_outside_the_array_is_left_to_zarr(traces):
    a, _ = traces
    assert not read_rows_direct(a, 100, a.shape[0] + 5, np.zeros((a.shape[0] - 95, C), np.int16))


def test_a_chunk_never_written_reads_as_the_fill_value(traces):
    a, values = traces
    rows = a.chunks[0]
    (chunk_folder(a) / "2" / "0").unlink()
    out = np.ones((3 * rows, C), np.int16)
    assert read_rows_direct(a, rows, 4 * rows, out)
    np.testing.assert_array_equal(out[rows : 2 * rows], 0)
    np.testing.assert_array_equal(out[:rows], values[rows : 2 * rows])


def test_other_layouts_are_left_to_zarr(tmp_path):
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="w", zarr_format=3)
    values = np.arange(600, dtype=np.int16).reshape(100, 6)
    other = {
        "zstd": group.create_array("zstd", shape=(100, 6), dtype="int16", chunks=(10, 6)),
        "column chunks": group.create_array(
            "cols",
            shape=(100, 6),
            dtype="int16",
            chunks=(10, 3),
            compressors=zarr.codecs.BloscCodec(),
        ),
    }
    for array in other.values():
        array[:] = values
        assert chunk_folder(array) is None
        out = np.zeros((30, 6), np.int16)
        assert not read_rows_direct(array, 5, 35, out) and not out.any()
        np.testing.assert_array_equal(read_rows_into(array, 5, 35, out), values[5:35])
