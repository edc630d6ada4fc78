"""Per-spike arrays read and written in blocks (kilosnake.io.streaming), and the stages that use
them keep the results they gave when they held whole arrays."""

import io

import numpy as np
import pytest
import zarr

from kilosnake.io.streaming import (
    ChunkCached,
    NpyWriter,
    blocks,
    columns_by_label,
    label_counts,
    label_groups,
    npy_blocks,
    read_rows,
)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(10, dtype=np.uint64),
        np.random.default_rng(0).standard_normal((7, 3, 5)).astype(np.float32),
        np.zeros((0, 3, 4), np.float32),
        np.zeros(0, np.uint32),
    ],
    ids=["uint64", "float32-3d", "no-rows-3d", "no-rows-1d"],
)
def test_npy_writer_writes_the_bytes_of_np_save(tmp_path, array):
    expected = io.BytesIO()
    np.save(expected, array, allow_pickle=False)
    with NpyWriter(tmp_path / "a.npy", array.dtype, array.shape) as out:
        for s in range(0, array.shape[0], 3):
            out.write(array[s : s + 3])
    assert (tmp_path / "a.npy").read_bytes() == expected.getvalue()
    back = [b for _, b in npy_blocks(tmp_path / "a.npy", step=2)]
    got = np.concatenate(back) if back else np.zeros((0,) + array.shape[1:], array.dtype)
    np.testing.assert_array_equal(got, array)


def test_npy_writer_refuses_a_short_file_and_a_wrong_row_shape(tmp_path):
    with pytest.raises(ValueError, match="1 rows written, 2 declared"):
        with NpyWriter(tmp_path / "a.npy", np.float32, (2, 3)) as out:
            out.write(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="rows of shape"):
        with NpyWriter(tmp_path / "b.npy", np.float32, (2, 3)) as out:
            out.write(np.zeros((2, 4)))


@pytest.fixture
def zarr_rows(tmp_path):
    data = np.random.default_rng(1).standard_normal((1000, 2, 3)).astype(np.float32)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    arr = g.create_array("x", shape=data.shape, dtype=data.dtype, chunks=(64, 2, 3))
    arr[...] = data
    return data, arr


@pytest.mark.parametrize(
    "idx",
    [
        np.arange(1000),
        np.array([0, 5, 999]),
        np.array([999, 3, 500, 3]),
        np.zeros(0, int),
        np.sort(np.random.default_rng(2).choice(1000, 300, replace=False)),
    ],
    ids=["all", "sparse", "unsorted-with-repeat", "none", "random"],
)
def test_read_rows_is_fancy_indexing(zarr_rows, idx):
    data, arr = zarr_rows
    for step in (7, 64, 5000):
        got = read_rows(arr, idx, step)
        assert got.shape == data[idx].shape and got.dtype == data.dtype
        np.testing.assert_array_equal(got, data[idx])


def test_read_rows_refuses_rows_outside_the_array(zarr_rows):
    _, arr = zarr_rows
    with pytest.raises(IndexError, match="outside an array of 1000 rows"):
        read_rows(arr, np.array([5, 1000]))


def test_blocks_cover_the_array_once(zarr_rows):
    data, arr = zarr_rows
    parts = list(blocks(arr, 300))
    assert [s for s, _ in parts] == [0, 300, 600, 900]
    np.testing.assert_array_equal(np.concatenate([b for _, b in parts]), data)


class CountedReads:
    """A Zarr array that counts the slices read from it."""

    def __init__(self, array):
        self.array, self.reads = array, 0
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks

    def __getitem__(self, rows):
        self.reads += 1
        return self.array[rows]


@pytest.mark.parametrize("start", [0, 5])
def test_blocks_read_a_chunk_longer_than_a_block_once(tmp_path, start):
    data = np.arange(1000, dtype=np.uint32)
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    whole = g.create_array("x", shape=data.shape, dtype=data.dtype, chunks=(1000,))
    whole[...] = data
    counted = CountedReads(whole)
    parts = list(blocks(counted, 64, start=start))
    assert [s for s, _ in parts] == list(range(start, 1000, 64))
    assert all(len(b) == min(64, 1000 - s) for s, b in parts)
    np.testing.assert_array_equal(np.concatenate([b for _, b in parts]), data[start:])
    assert counted.reads == 1  # one read of 16 blocks (1024 rows): the chunk decoded once


def test_chunk_cached_rows_equal_the_arrays_and_decode_a_chunk_once(tmp_path):
    data = np.arange(1000, dtype=np.uint32) * 3
    g = zarr.open_group(str(tmp_path / "k.zarr"), mode="w", zarr_format=3)
    arr = g.create_array("x", shape=data.shape, dtype=data.dtype, chunks=(256,))
    arr[...] = data
    counted = CountedReads(arr)
    cached = ChunkCached(counted)
    for lo, hi in [(0, 10), (10, 200), (250, 300), (300, 700), (990, 1200), (5, 6)]:
        np.testing.assert_array_equal(cached[lo:hi], data[lo:hi])
    # spans read: [0, 256), [0, 512), [256, 768), [768, 1000), [0, 256)
    assert counted.reads == 5
    idx = np.array([3, 999, 500])
    np.testing.assert_array_equal(read_rows(ChunkCached(counted), idx, step=64), data[idx])


def test_label_groups_stay_under_the_budget_unless_one_label_is_larger():
    counts = np.array([5, 0, 3, 9, 2, 2])
    assert [g.tolist() for g in label_groups(counts, budget=7)] == [[0], [2], [3], [4, 5]]
    assert [g.tolist() for g in label_groups(counts, budget=100)] == [[0, 2, 3, 4, 5]]
    assert label_groups(np.zeros(3, int)) == []


@pytest.mark.parametrize("budget", [1, 50, 10_000])
def test_columns_by_label_gives_each_label_its_rows_in_order(budget):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 12, 2000)
    labels[labels == 4] = 5  # a label with no rows
    times = np.sort(rng.integers(0, 10**6, 2000))

    def read_blocks():
        for (_, lab), (_, t) in zip(blocks(labels, 128), blocks(times, 128)):
            yield lab, {"time": t}

    counts = label_counts(blocks(labels, 100), 12)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=12))
    seen = []
    for label, rows, cols in columns_by_label(read_blocks, counts, budget):
        seen.append(label)
        np.testing.assert_array_equal(rows, np.flatnonzero(labels == label))
        np.testing.assert_array_equal(cols["time"], times[labels == label])
    assert seen == [c for c in range(12) if counts[c]]


def test_export_of_unsorted_spikes_equals_that_of_sorted_ones(tmp_path):
    from curation_fixtures import Unit, build_fixture, export, refractory_train, run_curation

    from kilosnake.io.store import open_store, write_array, writing_store

    rng = np.random.default_rng(5)
    units = [Unit(refractory_train(rng, 15, 30), 0), Unit(refractory_train(rng, 10, 30), 1)]
    paths = build_fixture(tmp_path / "sorted", units, [4, 9], duration_s=30.0)
    phy_sorted, _ = export(paths, run_curation(paths))
    g = open_store(paths.spikes)
    perm = np.random.default_rng(0).permutation(g["time"].shape[0])
    shuffled = build_fixture(tmp_path / "shuffled", units, [4, 9], duration_s=30.0)
    with writing_store(shuffled.spikes, "final_pass") as w:
        for name in g.array_keys():
            values = np.asarray(g[name][...])
            per_spike = values.shape[0] == perm.size and name not in (
                "similar_templates",
                "template_feature_ind",
                "pc_feature_ind",
            )
            write_array(
                w,
                name,
                values[perm] if per_spike else values,
                chunks=(64,) + values.shape[1:] if per_spike else None,
            )
    phy_shuffled, summary = export(shuffled, run_curation(shuffled))
    assert summary["n_spikes"] > 100
    for name in (
        "spike_times.npy",
        "spike_clusters.npy",
        "amplitudes.npy",
        "pc_features.npy",
        "template_features.npy",
    ):
        np.testing.assert_array_equal(np.load(phy_shuffled / name), np.load(phy_sorted / name))
