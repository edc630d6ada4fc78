"""Probe loading from every accepted source, and the probe checks."""

import numpy as np
import pytest
import scipy.io

from kilosnake.errors import InputError
from kilosnake.io.probe import (
    Probe,
    load_probe,
    neuropixels_like,
    validate_probe,
    write_npy_folder,
    write_probeinterface_json,
)


@pytest.fixture
def probe():
    return neuropixels_like(32, n_shanks=2)


def assert_same_probe(a: Probe, b: Probe):
    np.testing.assert_array_equal(a.chan_map, b.chan_map)
    np.testing.assert_allclose(a.xc, b.xc)
    np.testing.assert_allclose(a.yc, b.yc)
    np.testing.assert_array_equal(a.kcoords, b.kcoords)


def test_probeinterface_json_round_trip(tmp_path, probe):
    write_probeinterface_json(probe, tmp_path / "p.json")
    assert_same_probe(load_probe(tmp_path / "p.json"), probe)


def test_npy_folder_round_trip(tmp_path, probe):
    write_npy_folder(probe, tmp_path / "geom")
    assert_same_probe(load_probe(tmp_path / "geom"), probe)


def test_kilosort_mat_is_one_based_and_drops_unconnected(tmp_path, probe):
    connected = np.ones(32, bool)
    connected[[3, 7]] = False
    scipy.io.savemat(
        tmp_path / "chanMap.mat",
        {
            "chanMap": (probe.chan_map + 1).astype(np.uint16)[:, None],
            "connected": connected[:, None],
            "xcoords": probe.xc.astype(np.uint16)[:, None],
            "ycoords": probe.yc[:, None],
            "kcoords": (probe.kcoords + 1)[:, None],
        },
    )
    loaded = load_probe(tmp_path / "chanMap.mat")
    np.testing.assert_array_equal(loaded.chan_map, probe.chan_map[connected])
    np.testing.assert_allclose(loaded.xc, probe.xc[connected])
    np.testing.assert_array_equal(loaded.kcoords, probe.kcoords[connected])


def test_dict_and_bunch_like_objects(probe):
    d = {
        "chanMap": probe.chan_map,
        "xc": probe.xc,
        "yc": probe.yc,
        "kcoords": probe.kcoords,
        "NchanTOT": 33,
    }
    assert_same_probe(load_probe(d), probe)

    class Bunch(dict):
        __getattr__ = dict.get

    b = load_probe(Bunch(d))
    assert b.n_channels_total == 33


def test_prb_files_are_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    prb = tmp_path / "probe.prb"
    prb.write_text(f"open({str(marker)!r}, 'w').write('x')\nchannel_groups = {{}}\n")
    with pytest.raises(InputError, match="Python code"):
        load_probe(prb)
    assert not marker.exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: setattr(p, "chan_map", p.chan_map + 1), "1-based"),
        (lambda p: p.chan_map.__setitem__(0, 40), "out of range"),
        (lambda p: p.chan_map.__setitem__(1, p.chan_map[0]), "twice"),
        (lambda p: p.yc.__setitem__(2, np.nan), "NaN"),
        (lambda p: (p.xc.__setitem__(1, p.xc[0]), p.yc.__setitem__(1, p.yc[0])), "share"),
        (lambda p: setattr(p, "xc", p.xc[:-1]), "differ"),
    ],
)
def test_validate_probe_names_the_problem(probe, mutate, message):
    mutate(probe)
    with pytest.raises(InputError, match=message) as err:
        validate_probe(probe, 32)
    assert "fix:" in str(err.value)


def test_valid_probe_passes(probe):
    validate_probe(probe, 33)  # sync channel beyond the probe's rows is fine
