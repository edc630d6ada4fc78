"""Two CPU runs of the demo with the same seed give the same bytes, and every store says how it
was made (seed, version, device)."""

import shutil

import pytest
from workflow_runs import differing, fresh_run, output_digests, output_files, results

import kilosnake
from kilosnake.io.store import open_store

STORES = (
    "whitening.zarr",
    "preprocessed.zarr",
    "drift.zarr",
    "detect.zarr",
    "templates.zarr",
    "spikes.zarr",
    "merge.zarr",
    "split.zarr",
    "cutoff.zarr",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(demo_sort, tmp_path_factory):
    """Two independent sorts of the demo recording, each in its own folder."""
    return demo_sort, fresh_run(tmp_path_factory.mktemp("second"))


def test_every_stage_wrote_its_outputs(runs):
    files = {str(f) for f in output_files(results(runs[0]))}
    for name in STORES:
        assert f"{name}/zarr.json" in files, name
    assert {"phy/params.py", "phy/spike_times.npy", "input.json"} <= files


def test_two_runs_give_identical_bytes(runs):
    first, second = (output_digests(r) for r in runs)
    assert len(first) > 100
    assert differing(first, second) == []


def test_the_comparison_sees_one_changed_byte(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy, ignore=shutil.ignore_patterns(".snakemake"))
    before = output_digests(copy)
    chunk = results(copy) / "spikes.zarr" / "time" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    (results(copy) / "phy" / "phy.log").write_text("opened by phy\n")  # foreign: ignored
    assert differing(before, output_digests(copy)) == ["spikes.zarr/time/c/0"]


@pytest.mark.parametrize("store", STORES)
def test_every_store_records_seed_version_and_device(runs, store):
    attrs = open_store(results(runs[0]) / store).attrs
    assert attrs["seed"] == 42 and attrs["params"]["seed"] == 42
    assert attrs["kilosnake_version"] == kilosnake.__version__
    assert attrs["device"] == "cpu"
    assert attrs["complete"] is True
