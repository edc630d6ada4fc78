"""Curation is never lost, end to end: a Phy folder edited as Phy does survives a rerun of the
export, through Snakemake and through ``kilosnake.run()``."""

import shutil

import numpy as np
import pytest
from curation_fixtures import Unit, build_fixture, refractory_train
from test_export_manifest import phy_save
from test_export_workflow import run_rules

from kilosnake.export.manifest import MANIFEST_NAME, kept_folders
from kilosnake.export.validate import validate_phy


def curate_as_phy_does(phy):
    """A session in Phy: labels saved, a column added, a merge (spike_clusters.npy rewritten),
    Phy's cache and log. Returns the bytes of every file the person's session left."""
    phy_save(phy, {0: "noise", 1: "good"})
    (phy / "cluster_quality.tsv").write_text("cluster_id\tquality\n1\t5\n")
    clusters = np.load(phy / "spike_clusters.npy")
    clusters[clusters == 0] = 1  # merged
    np.save(phy / "spike_clusters.npy", clusters)
    (phy / ".phy").mkdir()
    (phy / ".phy" / "state.json").write_text('{"ClusterView": {}}\n')
    (phy / "phy.log").write_text("phy started\n")
    return {p.relative_to(phy): p.read_bytes() for p in phy.rglob("*") if p.is_file()}


def assert_kept(phy, before):
    kept = kept_folders(phy)
    assert len(kept) == 1, list(phy.parent.iterdir())
    after = {p.relative_to(kept[0]): p.read_bytes() for p in kept[0].rglob("*") if p.is_file()}
    assert after == before  # the whole curated folder, byte for byte
    assert validate_phy(phy)["phylib_checked"]  # and a fresh export in its place
    assert "noise" not in (phy / "cluster_group.tsv").read_text()
    assert (phy / MANIFEST_NAME).is_file()
    return kept[0]


@pytest.fixture
def workdir(tmp_path):
    """A workflow folder whose sorting stages are already done (fixture stores)."""
    rng = np.random.default_rng(21)
    units = [Unit(refractory_train(rng, 15, 20), 0), Unit(refractory_train(rng, 15, 20), 1)]
    fx = build_fixture(tmp_path / "fixture", units, [4, 11], duration_s=20)
    results = tmp_path / "results" / "rec"
    results.mkdir(parents=True)
    for store in ("spikes", "templates", "whitening"):
        shutil.copytree(fx.folder / f"{store}.zarr", results / f"{store}.zarr")
    shutil.move(str(fx.dat), tmp_path / "rec.bin")
    (tmp_path / "probe").mkdir()
    text = fx.input_json.read_text().replace(str(fx.dat), str(tmp_path / "rec.bin"))
    (results / "input.json").write_text(text)
    done = run_rules(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path


@pytest.mark.slow
def test_a_rerun_through_snakemake_keeps_the_curated_folder(workdir):
    phy = workdir / "results" / "rec" / "phy"
    before = curate_as_phy_does(phy)
    rerun = run_rules(workdir, config=["good_max_spread_um=50"])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    kept = assert_kept(phy, before)
    log = (workdir / "results" / "rec" / "logs" / "export_phy.log").read_text()
    assert "WARNING" in log and str(kept.name) in log and "cluster_group.tsv" in log
    assert f"kept whole as results/rec/{kept.name}" in rerun.stdout  # said at the end
    # the new export untouched: the next rerun replaces it without keeping a copy
    again = run_rules(workdir, config=["good_max_spread_um=60"])
    assert again.returncode == 0 and len(kept_folders(phy)) == 1


@pytest.mark.slow
def test_a_rerun_through_run_keeps_the_curated_folder(tmp_path):
    from test_api_workflow import write_pykilosort_recording

    from kilosnake.api import Bunch, run

    paths = write_pykilosort_recording(tmp_path)
    probe = Bunch(
        NchanTOT=385,
        chanMap=np.load(tmp_path / "chanMap.npy").squeeze().astype(np.int64) - 1,
        xc=np.load(tmp_path / "xc.npy").squeeze(),
        yc=np.load(tmp_path / "yc.npy").squeeze(),
        kcoords=np.load(tmp_path / "kcoords.npy").squeeze(),
    )
    first = run(paths.bin, probe=probe, params={"device": "cpu"}, cores=2)
    before = curate_as_phy_does(first.phy_dir)
    changed = {"device": "cpu", "good_max_spread_um": 50}
    second = run(paths.bin, probe=probe, params=changed, cores=2)
    assert second.phy_dir == first.phy_dir
    assert_kept(first.phy_dir, before)
