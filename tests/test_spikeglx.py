"""SpikeGLX .meta: the probe geometry (NP1.0, NP2.0 single- and four-shank) and the recording."""

import numpy as np
import pytest
from spikeglx_meta import four_shank_layout, np1_meta, np2_meta, write_meta

from kilosnake.errors import InputError
from kilosnake.io.probe import load_probe
from kilosnake.io.recording import read_spikeglx_meta, recording_info
from kilosnake.io.spikeglx import parse_channel_list, probe_arrays
from kilosnake.preprocess.check_input import check_input
from kilosnake.workflow.recordings import recording_sources, shank_counts


def meta_file(tmp_path, text, name="rec_g0_t0.imec0.ap"):
    bin_path = tmp_path / f"{name}.bin"
    return write_meta(bin_path, text)


def test_channel_list():
    assert parse_channel_list("2,4,8,12:15") == [2, 4, 8, 12, 13, 14, 15]


@pytest.mark.parametrize("geom_map", [False, True])
def test_np1_geometry(tmp_path, geom_map):
    p = load_probe(meta_file(tmp_path, np1_meta(range(32), geom_map=geom_map)))
    np.testing.assert_array_equal(p.chan_map, np.arange(32))
    assert p.n_channels_total == 33  # 32 AP + sync
    np.testing.assert_allclose(p.xc[:4], [27, 59, 11, 43])  # staggered on alternate rows
    np.testing.assert_allclose(p.yc, 20 * (np.arange(32) // 2))
    assert set(p.kcoords) == {0}
    assert p.name == "NP1000"


def test_np1_imro_and_geom_map_agree_bank_1_and_subset(tmp_path):
    channels = [*range(0, 10), *range(20, 30)]
    a = probe_arrays(meta_file(tmp_path, np1_meta(channels, bank=1), "a"))
    b = probe_arrays(meta_file(tmp_path, np1_meta(channels, bank=1, geom_map=True), "b"))
    for key in ("chan_map", "xc", "yc", "kcoords"):
        np.testing.assert_allclose(a[key], b[key])
    np.testing.assert_array_equal(a["chan_map"], np.arange(20))  # file columns
    electrodes = 384 + np.asarray(channels)
    np.testing.assert_allclose(a["yc"], 20 * (electrodes // 2))  # bank 1 starts at 3840 µm
    assert a["n_channels_total"] == 21


@pytest.mark.parametrize("geom_map", [False, True])
def test_np2_single_shank_geometry(tmp_path, geom_map):
    p = load_probe(meta_file(tmp_path, np2_meta(range(24), geom_map=geom_map)))
    np.testing.assert_allclose(p.xc, 27 + 32 * (np.arange(24) % 2))
    np.testing.assert_allclose(p.yc, 15 * (np.arange(24) // 2))
    assert p.n_channels_total == 25 and p.name == "NP2000"


@pytest.mark.parametrize("geom_map", [False, True])
def test_np2_four_shank_geometry(tmp_path, geom_map):
    electrodes, shanks = four_shank_layout(8)
    path = meta_file(tmp_path, np2_meta(range(32), electrodes, shanks, geom_map=geom_map))
    p = load_probe(path)
    np.testing.assert_array_equal(p.kcoords, np.repeat(np.arange(4), 8))
    np.testing.assert_allclose(p.xc, p.kcoords * 250 + 27 + 32 * (np.arange(32) % 2))
    np.testing.assert_allclose(p.yc, 15 * ((np.arange(32) % 8) // 2))
    assert shank_counts({"r": {"probe": str(path)}}) == {"r": 4}


def test_unused_channels_are_left_out(tmp_path):
    text = np1_meta(range(8), geom_map=True).replace("(0:43:20:1)", "(0:43:20:0)")
    a = probe_arrays(meta_file(tmp_path, text))
    np.testing.assert_array_equal(a["chan_map"], [0, 1, 2, 4, 5, 6, 7])
    np.testing.assert_array_equal(a["unused"], [3])


def test_gain_and_rate(tmp_path):
    meta_file(tmp_path, np1_meta(range(8), sample_rate=30000.5))
    meta = read_spikeglx_meta(tmp_path / "rec_g0_t0.imec0.ap.bin")
    assert meta["n_channels"] == 9 and meta["sample_rate"] == 30000.5
    assert meta["uv_per_bit"] == pytest.approx(0.6 / 512 / 500 * 1e6)
    electrodes, shanks = four_shank_layout(2)
    meta_file(tmp_path, np2_meta(range(8), electrodes, shanks), "np2")
    meta = read_spikeglx_meta(tmp_path / "np2.bin")
    assert meta["uv_per_bit"] == pytest.approx(0.5 / 8192 / 80 * 1e6)


def test_unknown_probe_without_geom_map_says_what_to_do(tmp_path):
    text = np1_meta(range(8)).replace("~imroTbl=(0,", "~imroTbl=(1110,")
    with pytest.raises(InputError, match="snsGeomMap"):
        probe_arrays(meta_file(tmp_path, text))


def test_recording_without_probe_takes_the_meta(tmp_path):
    bin_path = tmp_path / "rec_g0_t0.imec0.ap.bin"
    rec = recording_sources({"dat": str(bin_path)})["rec_g0_t0.imec0.ap"]
    assert rec["probe"] is None  # no .meta yet
    write_meta(bin_path, np1_meta(range(8)))
    rec = recording_sources({"dat": str(bin_path)})["rec_g0_t0.imec0.ap"]
    assert rec["probe"] == str(bin_path.with_suffix(".meta"))
    given = recording_sources({"dat": str(bin_path), "probe": "p.json"})["rec_g0_t0.imec0.ap"]
    assert given["probe"] == "p.json"  # a given probe wins


def test_check_input_with_the_meta_as_probe(tmp_path):
    n_samples = 40000
    bin_path = tmp_path / "rec.bin"
    rng = np.random.default_rng(0)
    x = rng.normal(0, 20, (n_samples, 33)) + rng.normal(0, 200, 33)
    x.astype(np.int16).tofile(bin_path)
    meta = write_meta(bin_path, np1_meta(range(32), n_samples=n_samples))
    info = recording_info(bin_path)
    assert info.n_channels_total == 33
    report = check_input(bin_path, str(meta), NT=8192)
    assert report["n_channels_total"] == 33
    assert len(report["probe"]["chan_map"]) == 32
    assert report["uv_per_bit"] == pytest.approx(2.34375)


def test_no_probe_error_names_the_meta_route(tmp_path):
    bin_path = tmp_path / "rec.bin"
    np.zeros((100, 4), np.int16).tofile(bin_path)
    with pytest.raises(InputError, match=r"\.meta"):
        check_input(bin_path, None, n_channels=4)


def test_agrees_with_probeinterface(tmp_path):
    pi = pytest.importorskip("probeinterface")
    electrodes, shanks = four_shank_layout(8)
    cases = {
        "np1": np1_meta(range(32)),
        "np1_bank1": np1_meta(range(16), bank=1),
        "np2": np2_meta(range(24)),
        "np24": np2_meta(range(32), electrodes, shanks),
    }
    for name, text in cases.items():
        path = meta_file(tmp_path, text, name)
        ours = load_probe(path)
        theirs = pi.read_spikeglx(path)
        pos = theirs.contact_positions
        order = np.argsort(theirs.device_channel_indices)
        pos = pos[order]
        np.testing.assert_allclose(ours.xc - ours.xc.min(), pos[:, 0] - pos[:, 0].min())
        np.testing.assert_allclose(ours.yc - ours.yc.min(), pos[:, 1] - pos[:, 1].min())
