"""Scatter and gather over time blocks, and multi-shank sub-recordings (library level).

The whole-workflow identity (blocks and shanks give the same Phy folder) is in
test_scatter_workflow.py.
"""

import json

import numpy as np
import pytest

from kilosnake.io.probe import Probe, neuropixels_like
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader, block_batches
from kilosnake.params import resolve
from kilosnake.preprocess.gather import gather_preprocessed
from kilosnake.preprocess.shank_input import shank_input
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening
from kilosnake.runtime.backend import cpu_backend
from kilosnake.workflow.shanks import shank_seed, split_name, sub_recording

FS = 30000.0
N_SAMPLES, N_CHANNELS, NT = 40000, 32, 8192  # 5 batches, the last one short


@pytest.mark.parametrize("n_batches, n_blocks", [(5, 1), (5, 2), (5, 3), (14, 4), (3, 5)])
def test_blocks_cover_every_batch_once_in_order(n_batches, n_blocks):
    ranges = [block_batches(n_batches, n_blocks, i) for i in range(n_blocks)]
    assert [b for r in ranges for b in r] == list(range(n_batches))
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_block_outside_the_scatter_is_refused():
    with pytest.raises(ValueError, match="does not exist"):
        block_batches(5, 3, 3)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, (N_SAMPLES, N_CHANNELS)) + rng.normal(0, 300, N_CHANNELS)
    x.astype(np.int16).tofile(folder / "rec.bin")
    info = RecordingInfo(str(folder / "rec.bin"), N_CHANNELS, "int16", FS)
    p = resolve({"NT": NT, "nSkipCov": 1, "device": "cpu"})
    compute_whitening(info, neuropixels_like(N_CHANNELS), p, cpu_backend(), folder / "w.zarr")
    preprocess_recording(info, folder / "w.zarr", p, cpu_backend(), folder / "whole.zarr")
    return folder, info, p


def scatter(folder, info, p, n_blocks):
    """Preprocess in ``n_blocks`` block stores and gather them; return the gathered store."""
    paths = [folder / f"blocks{n_blocks}" / f"preprocessed.{i}.zarr" for i in range(n_blocks)]
    for i, path in enumerate(paths):
        preprocess_recording(info, folder / "w.zarr", p, cpu_backend(), path, block=(i, n_blocks))
    gathered = folder / f"gathered{n_blocks}.zarr"
    gather_preprocessed(paths[::-1], gathered, p)  # any order: the gather sorts them
    return gathered, paths


@pytest.mark.parametrize("n_blocks", [2, 3, 7])
def test_gathered_blocks_read_like_the_single_store(recording, n_blocks):
    folder, info, p = recording
    gathered, paths = scatter(folder, info, p, n_blocks)
    whole, scattered = PreprocessedReader(folder / "whole.zarr"), PreprocessedReader(gathered)
    assert (scattered.n_samples, scattered.n_channels) == (whole.n_samples, whole.n_channels)
    assert scattered.NT == whole.NT and scattered.scaleproc == whole.scaleproc
    np.testing.assert_array_equal(scattered.probe.chan_map, whole.probe.chan_map)
    np.testing.assert_array_equal(
        scattered.read_int16(0, N_SAMPLES), whole.read_int16(0, N_SAMPLES)
    )
    for start in (-100, NT - 50, 2 * NT - 1, N_SAMPLES - 30):  # across block edges and ends
        np.testing.assert_array_equal(
            scattered.read(start, start + 200), whole.read(start, start + 200)
        )
    assert "traces" not in [k for k, _ in open_store(gathered).arrays()]  # nothing copied


def test_block_chunks_are_the_single_stores_chunks(recording):
    """A block store's traces chunks hold the same bytes as the single job's chunks."""
    folder, info, p = recording
    _, paths = scatter(folder, info, p, 2)
    whole = open_store(folder / "whole.zarr")["traces"]
    per_batch = NT // whole.chunks[0]  # chunk edges fall on batch edges
    assert per_batch * whole.chunks[0] == NT
    first_chunk = block_batches(5, 2, 1).start * per_batch
    block_chunks = sorted((paths[1] / "traces" / "c").iterdir(), key=lambda c: int(c.name))
    n_whole = len(list((folder / "whole.zarr" / "traces" / "c").iterdir()))
    assert [int(c.name) for c in block_chunks] == list(range(n_whole - first_chunk))
    for i, chunk in enumerate(block_chunks):
        same = folder / "whole.zarr" / "traces" / "c" / str(first_chunk + i) / "0"
        assert (chunk / "0").read_bytes() == same.read_bytes(), chunk


def test_gather_refuses_a_missing_block(recording):
    folder, info, p = recording
    _, paths = scatter(folder, info, p, 3)
    with pytest.raises(ValueError, match="not blocks 0..n-1"):
        gather_preprocessed(paths[:2], folder / "bad.zarr", p)
    assert not (folder / "bad.zarr").exists()


def test_shank_input_keeps_the_shanks_channels_and_arrays():
    probe = neuropixels_like(64, n_shanks=4)
    probe.kcoords = probe.kcoords * 2 + 1  # ids 1, 3, 5, 7: shank index k is the k-th id
    report = {
        "dat": "x.bin",
        "probe": probe.to_dict(),
        "rms": list(range(64)),
        "saturation_fraction": [0.0] * 64,
        "n_samples": 10,
    }
    sub = shank_input(report, 2)
    got = Probe.from_dict(sub["probe"])
    assert got.n_channels == 16 and set(got.kcoords) == {5.0}
    np.testing.assert_array_equal(got.chan_map, np.arange(32, 48))
    assert sub["rms"] == list(range(32, 48)) and sub["n_samples"] == 10
    assert sub["shank"] == {"index": 2, "id": 5.0, "n_shanks": 4}
    json.dumps(sub)
    with pytest.raises(ValueError, match="does not exist"):
        shank_input(report, 4)


def test_shank_names_and_seeds():
    assert split_name(sub_recording("mouse_1.day2", 3)) == ("mouse_1.day2", 3)
    assert split_name("mouse_1.day2") == ("mouse_1.day2", None)
    assert [shank_seed(42, k) for k in range(3)] == [42, 43, 44]


def test_joined_rows_follow_the_order_and_pad_narrow_shanks():
    from kilosnake.export.shanks import JoinedRows

    a = np.arange(12, dtype=np.float32).reshape(4, 1, 3)  # shank 0: 4 spikes, 3 columns
    b = -np.arange(1, 5, dtype=np.float32).reshape(2, 1, 2)  # shank 1: 2 spikes, 2 columns
    shank = np.array([0, 1, 0, 0, 1, 0])
    rows = np.array([0, 0, 1, 2, 1, 3])
    joined = JoinedRows([a, b], shank, rows)
    assert joined.shape == (6, 1, 3) and joined.dtype == np.float32
    full = joined[0:6]
    np.testing.assert_array_equal(full[[0, 2, 3, 5]], a)
    np.testing.assert_array_equal(full[[1, 4], :, :2], b)
    assert not full[[1, 4], :, 2].any()  # the narrower shank's extra column is zero
    np.testing.assert_array_equal(joined[2:5], full[2:5])


def test_widened_feature_lists_use_ids_no_row_holds():
    from kilosnake.export.shanks import unmatched, widen

    table = np.array([[4, 5], [5, 4]])  # shank holding ids 4..5 of 0..7
    wide = widen(table, 4, 4, 6, 8)
    np.testing.assert_array_equal(wide, [[4, 5, 6, 7], [5, 4, 6, 7]])
    assert widen(table, 2, 4, 6, 8) is table
    np.testing.assert_array_equal(unmatched(table, 3), [[4, 5, -1], [5, 4, -1]])
    with pytest.raises(ValueError, match="cannot widen"):
        widen(table, 9, 4, 6, 8)


def test_loop_calls_give_each_shank_its_inputs_outputs_and_seed(tmp_path):
    import zarr

    from kilosnake.io.shank_sets import shank_set_size
    from kilosnake.workflow.shanks import per_shank

    src = tmp_path / "in.zarr"
    zarr.open_group(str(src), mode="w").attrs.update({"shank_set": 2, "complete": True})
    infos = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    out = tmp_path / "out.zarr"
    with per_shank(
        2, {"seed": 7}, {"store": str(src), "info": infos, "dat": "r.bin"}, {"out": str(out)}
    ) as calls:
        assert [(i["store"], i["info"], i["dat"], pk["seed"]) for i, _, pk in calls] == [
            (f"{src}/shank0", infos[0], "r.bin", 7),
            (f"{src}/shank1", infos[1], "r.bin", 8),
        ]
        for _, o, _ in calls:
            zarr.open_group(o["out"], mode="w").attrs["complete"] = True
        assert not out.exists()  # published only when every shank is done
    assert shank_set_size(out) == 2 and open_store(f"{out}/shank1").attrs["complete"]
    with pytest.raises(RuntimeError):
        with per_shank(2, {"seed": 7}, {}, {"out": str(tmp_path / "bad.zarr")}) as calls:
            raise RuntimeError("a shank failed")
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad.zarr.tmp").exists()
    with per_shank(None, {"seed": 7}, {"x": "y"}, {"out": "o"}) as calls:
        assert calls == [({"x": "y"}, {"out": "o"}, {"seed": 7})]
