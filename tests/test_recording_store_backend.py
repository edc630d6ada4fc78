"""Raw-file reading with margins, atomic stores, and the backend choice."""

import logging

import numpy as np
import pytest

from kilosnake.errors import DeviceError, InputError
from kilosnake.io.recording import RawRecording, RecordingInfo, recording_info
from kilosnake.io.store import IncompleteStoreError, open_store, write_array, writing_store
from kilosnake.runtime.backend import cpu_backend, get_backend


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "float32"])
def test_read_windows_with_edge_padding(tmp_path, dtype):
    x = (np.arange(100 * 5).reshape(100, 5) % 1000).astype(dtype)
    x.tofile(tmp_path / "r.bin")
    rec = RawRecording(RecordingInfo(str(tmp_path / "r.bin"), 5, dtype))
    assert rec.n_samples == 100
    np.testing.assert_array_equal(rec.read(10, 20), x[10:20])
    np.testing.assert_array_equal(rec.read(10, 20, [4, 0]), x[10:20][:, [4, 0]])
    left = rec.read(-3, 2)
    np.testing.assert_array_equal(left, np.concatenate([np.repeat(x[:1], 3, 0), x[:2]]))
    right = rec.read(98, 103)
    np.testing.assert_array_equal(right, np.concatenate([x[98:], np.repeat(x[-1:], 3, 0)]))
    beyond = rec.read(150, 152)
    np.testing.assert_array_equal(beyond, np.repeat(x[-1:], 2, 0))
    assert left.dtype == np.dtype(dtype)


def test_a_large_window_read_in_pieces_by_threads_is_the_same(tmp_path, monkeypatch):
    import kilosnake.io.recording as recording

    x = (np.arange(1000 * 7) % 997).astype("int16").reshape(1000, 7)
    x.tofile(tmp_path / "r.bin")
    rec = RawRecording(RecordingInfo(str(tmp_path / "r.bin"), 7))
    whole = rec.read(-5, 1005)
    monkeypatch.setattr(recording, "READ_PIECE_BYTES", 1000)  # 14 kB: 4 pieces
    np.testing.assert_array_equal(rec.read(-5, 1005), whole)
    np.testing.assert_array_equal(rec.read(3, 998), x[3:998])


def test_a_file_cut_short_while_sorting_is_named(tmp_path, monkeypatch):
    import kilosnake.io.recording as recording

    monkeypatch.setattr(recording, "READ_PIECE_BYTES", 1000)
    path = tmp_path / "r.bin"
    np.zeros((1000, 7), "int16").tofile(path)
    rec = RawRecording(RecordingInfo(str(path), 7))
    with open(path, "r+b") as f:
        f.truncate(7 * 2 * 600)
    with pytest.raises(OSError, match="short read .* truncated"):
        rec.read(0, 1000)


def test_recording_info_needs_a_channel_count(tmp_path):
    (tmp_path / "r.bin").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="channel count"):
        recording_info(tmp_path / "r.bin")
    assert recording_info(tmp_path / "r.bin", n_channels=4).sample_rate == 30000.0


def test_store_is_published_only_when_complete(tmp_path):
    out = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError):
        with writing_store(out, "test", {"a": 1}) as g:
            write_array(g, "x", np.arange(3))
            raise RuntimeError("crash while writing")
    assert not out.exists() and not (tmp_path / "s.zarr.tmp").exists()
    with writing_store(out, "test", {"a": (1, 2)}, seed=7) as g:
        write_array(g, "x", np.arange(3))
    g = open_store(out)
    assert g.attrs["complete"] and g.attrs["seed"] == 7 and g.attrs["params"] == {"a": [1, 2]}
    np.testing.assert_array_equal(g["x"][...], np.arange(3))


def test_incomplete_store_is_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "half.zarr"), mode="w")
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(tmp_path / "half.zarr")


def test_store_bytes_are_deterministic(tmp_path):
    for name in ("a.zarr", "b.zarr"):
        with writing_store(tmp_path / name, "test", {"k": 1}, seed=1) as g:
            write_array(g, "x", np.arange(1000.0))
    files = sorted(
        p.relative_to(tmp_path / "a.zarr") for p in (tmp_path / "a.zarr").rglob("*") if p.is_file()
    )
    for rel in files:
        assert (tmp_path / "a.zarr" / rel).read_bytes() == (tmp_path / "b.zarr" / rel).read_bytes()


def test_backend_choice(caplog):
    with caplog.at_level(logging.INFO):
        be = get_backend("auto")
    assert be.name in ("cpu", "gpu") and "backend:" in caplog.text
    assert get_backend("cpu") == cpu_backend()
    with pytest.raises(DeviceError, match="device must be"):
        get_backend("tpu")


def test_gpu_without_a_gpu_is_a_clear_error():
    from kilosnake.runtime.backend import _gpu_backend_or_reason

    if _gpu_backend_or_reason()[0] is not None:
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="fix:"):
        get_backend("gpu")


def test_buffered_appends_write_the_same_array(tmp_path):
    import zarr

    from kilosnake.io.store import AppendableArray

    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(0, 900, 12)]
    g = zarr.open_group(tmp_path / "a.zarr", mode="w")
    plain = AppendableArray(g, "plain", (3,), np.float32, chunk_rows=3000)
    buffered = AppendableArray(g, "buffered", (3,), np.float32, chunk_rows=3000, buffered=True)
    for part in parts:
        plain.append(part)
        buffered.append(part)
    assert buffered.n < plain.n  # rows held back until a chunk is full ...
    buffered.close()  # ... and written on close
    np.testing.assert_array_equal(g["buffered"][...], g["plain"][...])
    np.testing.assert_array_equal(g["plain"][...], np.concatenate(parts))


def test_reading_ahead_returns_what_a_plain_read_returns():
    from kilosnake.io.prefetch import Prefetching

    class Counting:
        calls = []

        def read(self, start, stop):
            self.calls.append((start, stop))
            return np.arange(start, stop)

    keys = [(0, 5), (5, 9), (9, 20)]
    with Prefetching(Counting(), keys) as reader:
        for key in [(0, 5), (3, 4), (5, 9), (9, 20)]:  # (3, 4) is not expected: read directly
            np.testing.assert_array_equal(reader.read(*key), np.arange(*key))
    assert sorted(Counting.calls) == sorted(keys + [(3, 4)])  # each expected key read once


@pytest.mark.parametrize("channels", [[1, 2, 3], [4, 0, 2], [0, 1, 2, 3, 4]])
def test_reading_into_a_reused_buffer_and_picking_columns(tmp_path, channels):
    from kilosnake.io.prefetch import HostBuffers
    from kilosnake.io.recording import column_selector, select_columns

    x = (np.arange(100 * 5).reshape(100, 5) % 1000).astype(np.int16)
    x.tofile(tmp_path / "r.bin")
    rec = RawRecording(RecordingInfo(str(tmp_path / "r.bin"), 5, "int16"))
    ring = HostBuffers(30 * 5 * 2, count=2)
    for start, stop in [(-3, 20), (90, 104), (10, 40), (150, 152)]:
        out = ring.take((stop - start, 5), np.int16)
        rows = rec.read_rows(start, stop, out=out)
        assert rows is out
        expected = rec.read(start, stop)  # a fresh array
        np.testing.assert_array_equal(rows, expected)
        picked = select_columns(rows, column_selector(channels))
        np.testing.assert_array_equal(picked, expected[:, channels])
        assert picked.flags.c_contiguous
    assert column_selector([1, 2, 3]) == slice(1, 4)
    with pytest.raises(ValueError, match="host buffer"):
        ring.take((31, 5), np.int16)


def test_writing_rows_chunk_by_chunk_gives_the_same_array(tmp_path):
    from kilosnake.io.prefetch import WritingBehind

    data = np.random.default_rng(0).integers(-99, 99, size=(70, 3)).astype(np.int16)
    with writing_store(tmp_path / "s.zarr", "test") as g:
        arr = g.create_array("x", shape=data.shape, dtype="int16", chunks=(8, 3))
        with WritingBehind(depth=2, workers=3) as behind:
            for at in range(0, 70, 16):  # batches of two chunks, the last one partial
                behind.write_rows(arr, at, data[at : at + 16])
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["x"][...], data)
