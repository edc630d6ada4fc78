"""pykilosort habits: ``np1_probe()`` and ``neuropixel_probe_from_metafile(path)``."""

import numpy as np
from spikeglx_meta import four_shank_layout, np1_meta, np2_meta, write_meta

from kilosnake import neuropixel_probe_from_metafile, np1_probe
from kilosnake.io.probe import load_probe, validate_probe


def test_np1_probe_is_a_385_column_neuropixels_1():
    probe = np1_probe()
    assert probe.NchanTOT == 385
    np.testing.assert_array_equal(probe.chanMap, np.arange(384))
    assert probe.xc.shape == probe.yc.shape == probe.kcoords.shape == (384,)
    np.testing.assert_allclose(probe.xc[:4], [43, 11, 59, 27])
    assert probe.yc.min() == 20 and probe.yc.max() == 3840
    validate_probe(load_probe(probe), 385)


def test_np1_probe_is_the_meta_geometry_mirrored(tmp_path):
    # Kilosort's channel map views the probe from the other side: x -> 70 - x, y from 20 µm
    meta = write_meta(tmp_path / "r.ap.bin", np1_meta(range(384), geom_map=True))
    from_meta = neuropixel_probe_from_metafile(meta)
    probe = np1_probe()
    np.testing.assert_allclose(probe.xc, 70 - from_meta.xc)
    np.testing.assert_allclose(probe.yc, from_meta.yc + 20)


def test_neuropixel_probe_from_metafile(tmp_path):
    meta = write_meta(tmp_path / "r.ap.bin", np2_meta(range(32), *four_shank_layout(8)))
    probe = neuropixel_probe_from_metafile(meta)
    assert probe.NchanTOT == 33 and probe.name == "NP2010"
    np.testing.assert_array_equal(probe.chanMap, np.arange(32))
    np.testing.assert_array_equal(np.unique(probe.kcoords), [0, 1, 2, 3])
    validate_probe(load_probe(probe), 33)


def test_run_without_probe_or_meta_names_the_meta_route(tmp_path):
    import pytest

    from kilosnake import run

    np.zeros((10, 4), np.int16).tofile(tmp_path / "rec.bin")
    with pytest.raises(ValueError, match=r"\.meta"):
        run(tmp_path / "rec.bin")
