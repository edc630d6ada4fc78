"""The workflow on a generated 4-shank recording: shanks sorted separately and joined at export;
how the jobs are laid out (scatter_shanks, scatter_blocks) does not change a byte of the result.

Three sorts of a 10 s recording of the ``shanks4`` preset (4 shanks of 16 channels):

* ``loop``: the defaults: one job per stage, looping over the shanks (shank sets);
* ``shanks``: ``scatter_shanks=true``: one job per shank and stage;
* ``blocks``: ``scatter_blocks=3``: preprocess and final pass each over 3 time blocks (one job
  per block, looping over the shanks).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from workflow_runs import snakemake

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.io.shank_sets import shank_set_size, shank_stores
from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader

SYNTH = preset_config("shanks4", duration_s=10.0)
N_SHANKS, PER_SHANK = 4, 16
PHY = "results/rec/phy"
LAYOUTS = {"loop": (), "shanks": ("scatter_shanks=true",), "blocks": ("scatter_blocks=3",)}
STORES = (
    "whitening",
    "preprocessed",
    "drift",
    "detect",
    "templates",
    "spikes",
    "merge",
    "split",
    "cutoff",
)

pytestmark = pytest.mark.slow


def sort(workdir: Path, *config: str) -> str:
    """Sort the generated recording in ``workdir`` up to its Phy folder; return the output."""
    return snakemake(
        workdir,
        PHY,
        config=(
            "device=cpu",
            "dat=data/rec.bin",
            "probe=data/rec.probe.json",
            f"n_channels={SYNTH.n_channels_total}",
            *config,
        ),
        timeout=1800,
    ).output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("shanks")
    generate(SYNTH, base / "data", name="rec", seed=3)
    out = {}
    for layout, config in LAYOUTS.items():
        shutil.copytree(base / "data", base / layout / "data")  # each its own copy
        out[layout] = (base / layout, sort(base / layout, *config))
    return out


def results(runs, layout):
    return runs[layout][0] / "results" / "rec"


def shank_store(runs, layout, store, k):
    """Shank ``k``'s store: in the shank set of a loop job, or in the shank's folder."""
    folder = results(runs, layout)
    if layout == "shanks":
        return folder / f"shank{k}" / f"{store}.zarr"
    return Path(shank_stores(folder / f"{store}.zarr")[k])


def phy_files(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_each_layout_sorts_every_shank_on_its_own(runs):
    for store in STORES:
        assert shank_set_size(results(runs, "loop") / f"{store}.zarr") == N_SHANKS, store
        assert not (results(runs, "shanks") / f"{store}.zarr").exists(), store
    for layout in LAYOUTS:
        for k in range(N_SHANKS):
            for store in STORES:
                g = open_store(shank_store(runs, layout, store, k))  # complete, or raises
                assert g.attrs["complete"], (layout, store, k)
            g = open_store(shank_store(runs, layout, "whitening", k))
            assert g["chan_map"].shape == (PER_SHANK,) and set(g["kcoords"][...]) == {float(k)}
            seed = open_store(shank_store(runs, layout, "templates", k)).attrs["seed"]
            assert seed == 42 + k  # the shank's seed, whatever job computed it
    jobs = {layout: log.count("rule whitening:") for layout, (_, log) in runs.items()}
    assert jobs == {"loop": 1, "shanks": N_SHANKS, "blocks": 1}


def test_joined_phy_folder_has_every_shank(runs):
    phy = results(runs, "loop") / "phy"
    shanks = np.load(phy / "channel_shanks.npy")
    np.testing.assert_array_equal(shanks, np.repeat(np.arange(N_SHANKS), PER_SHANK))
    np.testing.assert_array_equal(
        np.sort(np.load(phy / "channel_map.npy")), np.arange(N_SHANKS * PER_SHANK)
    )
    positions = np.load(phy / "channel_positions.npy")
    assert positions.shape == (N_SHANKS * PER_SHANK, 2)
    assert np.unique(positions, axis=0).shape[0] == positions.shape[0]
    templates = np.load(phy / "templates.npy")
    clusters = np.load(phy / "spike_clusters.npy")
    assert np.all(np.diff(np.load(phy / "spike_times.npy").astype(np.int64)) >= 0)
    energy = (templates**2).sum(axis=1)  # (clusters, channels)
    on_shank = np.stack([energy[:, shanks == s].sum(1) for s in range(N_SHANKS)], axis=1)
    used = np.unique(clusters)
    # every unit lives on one shank, and every shank has units (ids unique across shanks)
    assert np.all((on_shank[used] > 0).sum(axis=1) == 1)
    assert set(on_shank[used].argmax(axis=1)) == set(range(N_SHANKS))
    w = np.load(phy / "whitening_mat.npy")
    assert not w[shanks[:, None] != shanks[None, :]].any()  # no whitening across shanks


@pytest.mark.parametrize("layout", ["shanks", "blocks"])
def test_layouts_give_the_same_phy_folder_byte_for_byte(runs, layout):
    a, b = results(runs, "loop") / "phy", results(runs, layout) / "phy"
    assert phy_files(a) == phy_files(b)
    for name in phy_files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("layout", ["shanks", "blocks"])
def test_layouts_give_the_same_traces_and_spikes(runs, layout):
    for k in range(N_SHANKS):
        a = PreprocessedReader(shank_store(runs, "loop", "preprocessed", k))
        b = PreprocessedReader(shank_store(runs, layout, "preprocessed", k))
        np.testing.assert_array_equal(a.read_int16(0, a.n_samples), b.read_int16(0, b.n_samples))
        sa = open_store(shank_store(runs, "loop", "spikes", k))
        sb = open_store(shank_store(runs, layout, "spikes", k))
        for name in ("time", "template", "amplitude", "pc_features", "template_features"):
            np.testing.assert_array_equal(sa[name][...], sb[name][...])


def test_time_blocks_ran_as_block_jobs(runs):
    log = runs["blocks"][1]
    assert log.count("rule preprocess_block:") == 3 and log.count("rule final_pass_block:") == 3
    assert "rule gather_preprocessed:" in log and "rule gather_spikes:" in log
    assert "preprocess_block" not in runs["loop"][1]
    assert (
        shank_set_size(results(runs, "blocks") / "blocks" / "preprocessed.2-of-3.zarr") == N_SHANKS
    )
