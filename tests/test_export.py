"""Phy export: every file at its exact dtype and shape, loadable by phylib, and phylib's traps."""

import os
import shutil

import numpy as np
import pytest
import zarr
from curation_fixtures import (
    Unit,
    build_fixture,
    export,
    poisson_train,
    refractory_train,
    run_curation,
)
from phylib.io.model import load_model

from kilosnake.export.validate import PhyExportError, validate_phy
from kilosnake.io.phy import read_params_py


def mixed_units(rng, duration=60):
    """A merge (units 0+1 one neuron), a split (template 2 holds two neurons), a Poisson unit."""
    a = refractory_train(rng, 20, duration)
    half = rng.random(a.size) < 0.4
    return [
        Unit(a[half], 0, peak_channel=4),
        Unit(a[~half], 1, peak_channel=4),
        Unit(refractory_train(rng, 12, duration), 2, peak_channel=9),
        Unit(refractory_train(rng, 12, duration), 2, peak_channel=14),
        Unit(poisson_train(rng, 15, duration), 3),
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(11)
    paths = build_fixture(
        tmp, mixed_units(rng), [5, 3, 11, 7], chan_map=np.arange(16)[::-1] + 1, extra_channels=2
    )
    stores = run_curation(paths)
    phy, summary = export(paths, stores)
    return paths, stores, phy, summary


def test_every_file_has_the_kilosort_dtype_and_shape(exported):
    paths, stores, phy, summary = exported
    f = {name[:-4]: np.load(phy / name) for name in os.listdir(phy) if name.endswith(".npy")}
    n = f["spike_times"].shape[0]
    n_clusters = zarr.open_group(str(stores["split"]), mode="r").attrs["n_clusters"]
    assert n == summary["n_spikes"] > 0 and n_clusters == 5 == summary["n_clusters"]
    expect = {
        "spike_times": (np.uint64, (n,)),
        "spike_templates": (np.uint32, (n,)),
        "spike_clusters": (np.uint32, (n,)),
        "amplitudes": (np.float64, (n,)),
        "templates": (np.float32, (n_clusters, 82, 16)),
        "channel_map": (np.int32, (16,)),
        "channel_positions": (np.float64, (16, 2)),
        "channel_shanks": (np.int32, (16,)),
        "similar_templates": (np.float32, (n_clusters, n_clusters)),
        "pc_features": (np.float32, (n, 3, 16)),
        "pc_feature_ind": (np.uint32, (n_clusters, 16)),
        "template_features": (np.float32, (n, 4)),
        "template_feature_ind": (np.uint32, (n_clusters, 4)),
        "whitening_mat": (np.float64, (16, 16)),
        "whitening_mat_inv": (np.float64, (16, 16)),
    }
    assert set(f) == set(expect)
    for name, (dtype, shape) in expect.items():
        assert (f[name].dtype, f[name].shape) == (np.dtype(dtype), shape), name
    assert np.all(np.diff(f["spike_times"].astype(np.int64)) >= 0)
    np.testing.assert_array_equal(f["spike_clusters"], f["spike_templates"])
    np.testing.assert_array_equal(f["channel_map"], np.arange(16)[::-1] + 1)
    assert not f["templates"][:, :21].any() and f["templates"][:, 21:].any()
    np.testing.assert_allclose(f["whitening_mat"] @ f["whitening_mat_inv"], np.eye(16), atol=1e-12)
    assert set(np.unique(f["spike_clusters"])) == {1, 2, 3, 4}  # 0 merged into 1, 4 split off 2


def test_cluster_tables_and_metrics(exported):
    _, _, phy, _ = exported
    for name, field in [
        ("cluster_KSLabel", "KSLabel"),
        ("cluster_group", "group"),
        ("cluster_ContamPct", "ContamPct"),
        ("cluster_Amplitude", "Amplitude"),
    ]:
        lines = (phy / f"{name}.tsv").read_text().splitlines()
        assert lines[0] == f"cluster_id\t{field}" and len(lines) == 6
        assert [int(x.split("\t")[0]) for x in lines[1:]] == list(range(5))
    contam_rows = (phy / "cluster_ContamPct.tsv").read_text().splitlines()[1:]
    contam = [float(x.split("\t")[1]) for x in contam_rows]
    assert all(0.0 <= c <= 100.0 for c in contam)
    labels = [x.split("\t")[1] for x in (phy / "cluster_KSLabel.tsv").read_text().splitlines()[1:]]
    assert labels[3] == "mua" and labels[1] == "good"
    rows = [x.split("\t") for x in (phy / "cluster_metrics.tsv").read_text().splitlines()]
    assert rows[0] == [
        "cluster_id",
        "n_spikes",
        "firing_rate_hz",
        "amplitude_uv",
        "snr",
        "rp_contamination",
        "presence_ratio",
        "label_reason",
    ]
    reasons = {int(r[0]): r[-1] for r in rows[1:]}
    assert reasons[1] == "good" and reasons[3] != "good" and reasons[3]  # the label explained
    values = {int(r[0]): dict(zip(rows[0][1:-1], map(float, r[1:-1]))) for r in rows[1:]}
    assert sorted(values) == [1, 2, 3, 4]
    assert all(0.0 <= v["rp_contamination"] <= 1.0 for v in values.values())
    assert values[1]["rp_contamination"] < values[3]["rp_contamination"]
    assert abs(values[1]["firing_rate_hz"] - 20) < 3
    # amplitude in µV: ~15 whitened units x unit-norm template x raw SD 10 x 2.34 µV per bit
    assert 50 < values[1]["amplitude_uv"] < 500


def test_params_py_points_at_the_raw_file_with_a_relative_forward_slash_path(exported, tmp_path):
    paths, _, phy, _ = exported
    text = (phy / "params.py").read_text()
    p = read_params_py(phy)
    assert p["dat_path"] == "../../rec.bin" and "\\" not in text
    assert p["n_channels_dat"] == 18 and p["dtype"] == "int16" and p["hp_filtered"] is False
    assert p["sample_rate"] == 30000.0 and p["offset"] == 0
    for line in text.splitlines():  # every value is a Python literal (written with repr)
        key, value = line.split(" = ")
        assert repr(p[key]) == value
    # the folder and the raw file move together: phylib still finds the data
    moved = tmp_path / "moved"
    shutil.copytree(paths.folder / "results", moved / "results")
    os.symlink(paths.dat, moved / "rec.bin")
    model = load_model(moved / "results" / "phy" / "params.py")
    try:
        assert model.traces is not None and model.n_channels_dat == 18
        w = model.get_waveforms(np.array([0]), np.arange(4))
        assert w.shape == (1, 82, 4)
    finally:
        model.close()


def test_phylib_loads_the_folder_and_reads_every_cluster(exported):
    _, _, phy, summary = exported
    assert summary["phylib_checked"]
    before = sorted(os.listdir(phy))
    model = load_model(phy / "params.py")
    try:
        assert model.n_templates == 5 and model.n_spikes == summary["n_spikes"]
        for c in model.cluster_ids:
            spikes = model.get_cluster_spikes(c)[:2]
            assert model.get_waveforms(spikes, np.arange(3)).shape == (len(spikes), 82, 3)
        assert model.features.shape[1:] == (16, 3)
    finally:
        model.close()
    assert sorted(os.listdir(phy)) == before


def test_merged_spikes_carry_their_features_onto_the_cluster_channels(exported):
    paths, _, phy, _ = exported
    src = zarr.open_group(str(paths.spikes), mode="r")
    t0 = src["time"][...][src["template"][...] == 0]
    src_pc = src["pc_features"][...][src["template"][...] == 0]
    src_ind = src["pc_feature_ind"][0]
    times = np.load(phy / "spike_times.npy")
    sel = np.isin(times, t0) & (np.load(phy / "spike_clusters.npy") == 1)
    out_pc = np.load(phy / "pc_features.npy")[sel]
    dst_ind = np.load(phy / "pc_feature_ind.npy")[1]
    assert out_pc.shape[0] == t0.size and not np.array_equal(src_ind, dst_ind)
    order = np.argsort(t0)
    for j, ch in enumerate(dst_ind):
        k = np.flatnonzero(src_ind == ch)
        expected = src_pc[order][:, :, k[0]] if k.size else 0
        np.testing.assert_array_equal(out_pc[:, :, j], expected)


def test_same_input_gives_identical_bytes(exported):
    paths, stores, phy, _ = exported
    again, _ = export(paths, stores, paths.folder / "results" / "phy_again")
    assert sorted(os.listdir(again)) == sorted(os.listdir(phy))
    for name in os.listdir(phy):
        assert (again / name).read_bytes() == (phy / name).read_bytes(), name


def test_the_reports_unit_files_are_the_exports(exported):
    """The QC report reads its units from a folder written from the stores beside the export:
    each of its files must be the export's file of that name, byte for byte."""
    from kilosnake.export.view import unit_files_folder
    from kilosnake.params import resolve

    paths, stores, phy, _ = exported
    stores_in_order = (paths.spikes, paths.templates, paths.whitening, paths.input_json)
    with unit_files_folder(
        *stores_in_order, stores["split"], stores["cutoff"], [], resolve({})
    ) as units:
        names = sorted(os.listdir(units))
        assert {"spike_times.npy", "cluster_metrics.tsv", "templates.npy"} <= set(names)
        for name in names:
            assert (units / name).read_bytes() == (phy / name).read_bytes(), name
    assert not units.exists()  # removed on leaving


def test_multi_shank_probe(tmp_path):
    rng = np.random.default_rng(12)
    units = [Unit(refractory_train(rng, 15, 30), 0), Unit(refractory_train(rng, 15, 30), 1)]
    paths = build_fixture(tmp_path, units, [3, 20], n_channels=32, n_shanks=2, duration_s=30)
    phy, summary = export(paths, run_curation(paths))
    shanks = np.load(phy / "channel_shanks.npy")
    np.testing.assert_array_equal(shanks, np.repeat([0, 1], 16))
    model = load_model(phy / "params.py")
    try:
        for t in range(2):
            ch = model.get_template(t).channel_ids
            assert np.unique(shanks[ch]).size == 1
    finally:
        model.close()


def test_one_template_is_padded_to_two(tmp_path):
    rng = np.random.default_rng(13)
    paths = build_fixture(tmp_path, [Unit(refractory_train(rng, 15, 30), 0)], [5], duration_s=30)
    phy, summary = export(paths, run_curation(paths))
    assert summary["phylib_checked"] and summary["n_clusters"] == 2
    assert np.load(phy / "templates.npy").shape == (2, 82, 16)
    assert np.load(phy / "template_feature_ind.npy").shape == (2, 2)
    assert np.load(phy / "template_features.npy").shape[1] == 2
    assert not np.load(phy / "templates.npy")[1].any()
    assert (phy / "cluster_KSLabel.tsv").read_text().splitlines()[2] == "1\tmua"
    model = load_model(phy / "params.py")
    try:
        assert model.n_templates == 2 and list(model.cluster_ids) == [0]
    finally:
        model.close()


@pytest.mark.parametrize("units", [[], [Unit(np.array([9000]), 0)]], ids=["zero", "one"])
def test_zero_or_one_spike_gives_a_complete_folder(tmp_path, units):
    paths = build_fixture(tmp_path, units, [5], duration_s=5)
    phy, summary = export(paths, run_curation(paths))
    n = len(units)
    assert not summary["phylib_checked"] and summary["n_spikes"] == n
    assert np.load(phy / "spike_times.npy").shape == (n,)
    assert np.load(phy / "pc_features.npy").shape == (n, 3, 16)
    assert np.load(phy / "template_features.npy").shape == (n, 2)
    assert np.load(phy / "templates.npy").shape == (2, 82, 16)
    assert validate_phy(phy)["n_spikes"] == n


def test_failed_validation_leaves_no_folder(tmp_path):
    rng = np.random.default_rng(14)
    paths = build_fixture(tmp_path, [Unit(refractory_train(rng, 15, 10), 0)], [5, 9], duration_s=10)
    stores = run_curation(paths)
    paths.dat.unlink()
    with pytest.raises(PhyExportError, match="dat_path"):
        export(paths, stores)
    assert not (paths.folder / "results" / "phy").exists()
    assert not (paths.folder / "results" / "phy.tmp").exists()


def test_unknown_microvolt_scale_gives_raw_amplitudes(tmp_path):
    rng = np.random.default_rng(15)
    paths = build_fixture(
        tmp_path, [Unit(refractory_train(rng, 15, 10), 0)], [5, 9], duration_s=10, uv_per_bit=None
    )
    phy, _ = export(paths, run_curation(paths))
    header = (phy / "cluster_metrics.tsv").read_text().splitlines()[0].split("\t")
    assert "amplitude_raw" in header and "amplitude_uv" not in header


def test_remapped_features_equal_a_direct_loop():
    """Features carried from each spike's source list onto its destination list (0 where the
    destination entry is absent), including spikes that keep their list."""
    from kilosnake.curation.data import remap_columns

    rng = np.random.default_rng(9)
    src_table = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [5, 6, 7, 0]])
    dst_table = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [4, 5, 6, 7]])
    values = rng.normal(size=(30, 2, 4)).astype(np.float32)
    src = rng.integers(0, 3, size=30)
    dst = rng.integers(0, 3, size=30)
    expected = np.zeros_like(values)
    for s in range(30):
        for j, channel in enumerate(dst_table[dst[s]]):
            hit = np.flatnonzero(src_table[src[s]] == channel)
            if hit.size:
                expected[s, :, j] = values[s, :, hit[0]]
    np.testing.assert_array_equal(remap_columns(values, src, dst, src_table, dst_table), expected)
    same = remap_columns(values, np.zeros(30, int), np.zeros(30, int), src_table, dst_table)
    np.testing.assert_array_equal(same, values)
