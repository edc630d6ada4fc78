"""Curation is never lost: the export's manifest, and a Phy folder a person changed kept whole."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from curation_fixtures import Unit, build_fixture, export, refractory_train, run_curation

from kilosnake.export.manifest import (
    MANIFEST_NAME,
    curation_changes,
    keep_curated,
    kept_folders,
    read_manifest,
    write_manifest,
)
from kilosnake.export.validate import validate_phy


def phy_save(folder, labels: dict) -> None:
    """What Phy's save writes: ``cluster_group.tsv`` with a ``cluster_id<TAB>group`` header."""
    rows = "".join(f"{c}\t{g}\n" for c, g in labels.items())
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + rows)


def exported_folder(tmp_path, name="phy"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "params.py").write_text("dat_path = '../rec.bin'\n")
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tmua\n1\tgood\n")
    np.save(folder / "spike_clusters.npy", np.array([0, 1, 1], np.uint32))
    (folder / ".snakemake_timestamp").write_text("")
    write_manifest(folder)
    return folder


def new_export(tmp_path, folder):
    new = tmp_path / "phy.tmp"
    new.mkdir()
    for path in folder.iterdir():
        if path.is_file() and path.name != MANIFEST_NAME:
            (new / path.name).write_bytes(path.read_bytes())
    return new


def test_the_manifest_lists_every_file_with_its_checksum(tmp_path):
    folder = exported_folder(tmp_path)
    manifest = read_manifest(folder)
    assert sorted(manifest["files"]) == ["cluster_group.tsv", "params.py", "spike_clusters.npy"]
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in manifest["files"].values())
    assert not curation_changes(folder, folder)  # Snakemake's timestamp is no one's work


def test_an_untouched_folder_is_replaced_without_a_copy(tmp_path):
    folder = exported_folder(tmp_path)
    assert keep_curated(folder, new_export(tmp_path, folder)) is None
    assert folder.is_dir() and kept_folders(folder) == []


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda f: phy_save(f, {0: "noise", 1: "good"}), "changed: cluster_group.tsv"),
        (lambda f: (f / "cluster_quality.tsv").write_text("cluster_id\tquality\n0\t3\n"), "added"),
        (lambda f: np.save(f / "spike_clusters.npy", np.array([0, 2, 2], np.uint32)), "changed"),
        (lambda f: ((f / ".phy").mkdir(), (f / ".phy" / "state.json").write_text("{}")), ".phy/"),
        (lambda f: (f / "phy.log").write_text("phy started\n"), "added: phy.log"),
        (lambda f: (f / "params.py").unlink(), "removed: params.py"),
    ],
    ids=["cluster_group", "new_column", "spike_clusters", "phy_cache", "phy_log", "removed"],
)
def test_a_changed_folder_is_moved_aside_whole(tmp_path, caplog, edit, expected):
    folder = exported_folder(tmp_path)
    edit(folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with caplog.at_level(logging.WARNING, logger="kilosnake"):
        kept = keep_curated(folder, new_export(tmp_path, folder))
    assert kept is not None and kept.name.startswith("phy.curated-") and not folder.exists()
    after = {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()}
    assert after == before  # every file, byte for byte
    assert expected in caplog.text and str(kept) in caplog.text
    assert kept_folders(folder) == [kept]


def test_two_kept_folders_in_the_same_second_get_distinct_names(tmp_path):
    names = []
    for _ in range(2):
        folder = exported_folder(tmp_path)
        phy_save(folder, {0: "good"})
        names.append(keep_curated(folder, tmp_path).name)
    assert len(set(names)) == 2


def test_a_folder_without_a_manifest_is_compared_with_the_new_export(tmp_path):
    folder = exported_folder(tmp_path)
    (folder / MANIFEST_NAME).unlink()  # written by an older version
    new = new_export(tmp_path, folder)
    assert keep_curated(folder, new) is None  # the same files: nothing to keep
    phy_save(folder, {0: "noise", 1: "good"})
    assert keep_curated(folder, new) is not None


def test_an_unreadable_manifest_counts_as_none(tmp_path):
    folder = exported_folder(tmp_path)
    (folder / MANIFEST_NAME).write_text("{not json")
    assert read_manifest(folder) is None


@pytest.fixture(scope="module")
def fixture_sort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manifest")
    rng = np.random.default_rng(5)
    units = [Unit(refractory_train(rng, 15, 30), 0), Unit(refractory_train(rng, 15, 30), 1)]
    paths = build_fixture(tmp, units, [4, 11], duration_s=30)
    return paths, run_curation(paths)


def test_the_export_writes_a_manifest_that_phylib_ignores(fixture_sort):
    paths, stores = fixture_sort
    phy, _ = export(paths, stores, paths.folder / "results" / "first")
    manifest = json.loads((phy / MANIFEST_NAME).read_text())
    names = sorted(p.name for p in phy.iterdir() if p.name != MANIFEST_NAME)
    assert sorted(manifest["files"]) == names and "cluster_group.tsv" in names
    assert validate_phy(phy)["phylib_checked"]  # phylib opens it, manifest and all


def test_a_rerun_keeps_the_curated_folder_and_exports_beside_it(fixture_sort):
    paths, stores = fixture_sort
    phy, _ = export(paths, stores, paths.folder / "results" / "curated")
    phy_save(phy, {0: "noise", 1: "good"})
    (phy / "cluster_notes.tsv").write_text("cluster_id\tnotes\n1\tnice unit\n")
    curated = (phy / "cluster_group.tsv").read_bytes()
    again, summary = export(paths, stores, phy)
    assert summary["kept_curated"] is not None
    kept = Path(summary["kept_curated"])
    assert kept.parent == phy.parent and kept.name.startswith("curated.curated-")
    assert (kept / "cluster_group.tsv").read_bytes() == curated
    assert (kept / "cluster_notes.tsv").is_file()
    assert "1\tnoise" not in (again / "cluster_group.tsv").read_text()  # a fresh export
    assert read_manifest(again) is not None
    _, summary = export(paths, stores, again)  # the new export untouched: simply replaced
    assert summary["kept_curated"] is None
