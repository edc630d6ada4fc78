"""pykilosort's Python API: the README example runs with only its import line changed."""

import json
import os

import numpy as np
import pytest

from kilosnake.api import Bunch, RunError, RunResult, run, stage_or_default
from kilosnake.export.validate import validate_phy
from kilosnake.io.phy import read_params_py

#: pykilosort's README example; only the import line differs
EXAMPLE = """
from pathlib import Path
import numpy as np
from kilosnake import add_default_handler, run, Bunch
add_default_handler(level='DEBUG')
dat_path = Path('imec_385_100s.bin')
dir_path = dat_path.parent
probe = Bunch()
probe.NchanTOT = 385
probe.chanMap = np.load(dir_path / 'chanMap.npy').squeeze().astype(np.int64) - 1
probe.xc = np.load(dir_path / 'xc.npy').squeeze()
probe.yc = np.load(dir_path / 'yc.npy').squeeze()
probe.kcoords = np.load(dir_path / 'kcoords.npy').squeeze()
run(dat_path, probe=probe, dir_path=dir_path, n_channels=385, dtype=np.int16, sample_rate=3e4)
"""


def test_bunch_is_a_dict_with_attribute_access():
    b = Bunch(a=1)
    b.chanMap = np.arange(3)
    assert b["chanMap"] is b.chanMap and b.a == 1 and isinstance(b, dict)
    del b.a
    assert "a" not in b
    with pytest.raises(AttributeError):
        _ = b.missing
    assert isinstance(b.copy(), Bunch)


def test_bad_arguments_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="stop_after"):
        stage_or_default("sorting")
    with pytest.raises(ValueError, match="probe"):
        run(tmp_path / "x.bin", dir_path=tmp_path)
    with pytest.raises(ValueError, match="stop_after"):
        run(tmp_path / "x.bin", probe=Bunch(chanMap=[0]), stop_after="sort")
    assert stage_or_default(None) == "export_phy"
    assert list(tmp_path.iterdir()) == []


def test_a_failing_stage_raises_and_names_its_log(tmp_path):
    np.zeros((10, 385), np.int16).tofile(tmp_path / "rec.bin")
    one_based = Bunch(
        NchanTOT=385,
        chanMap=np.arange(1, 385),
        xc=np.tile([0.0, 32.0], 192),
        yc=np.repeat(np.arange(192) * 20.0, 2),
    )
    with pytest.raises(RunError, match="logs") as err:
        run(tmp_path / "rec.bin", probe=one_based, stop_after="check_input", cores=1)
    log = tmp_path / "kilosnake_output" / "results" / "rec" / "logs" / "check_input.log"
    assert "1-based" in log.read_text()
    # the exception carries the failing stage and the first line of its error, from its log
    message = str(err.value)
    assert message.startswith("check_input failed: ") and "1-based" in message
    assert "At least one job did not complete" not in message and str(log) in message


def write_pykilosort_recording(folder):
    """A short 385-channel recording (sync channel last) and its 1-based chanMap.npy & co."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("np", duration_s=3.0, n_units=12, firing_rate_range_hz=(10.0, 30.0))
    paths = generate(cfg, folder, name="imec_385_100s", seed=3)
    probe = json.loads(paths.probe.read_text())["probes"][0]
    pos = np.asarray(probe["contact_positions"], dtype=np.float64)
    np.save(folder / "chanMap.npy", np.asarray(probe["device_channel_indices"])[:, None] + 1)
    np.save(folder / "xc.npy", pos[:, 0])
    np.save(folder / "yc.npy", pos[:, 1])
    np.save(folder / "kcoords.npy", np.zeros(len(pos)))
    return paths


@pytest.mark.slow
def test_pykilosort_example_runs_unchanged(tmp_path, monkeypatch):
    write_pykilosort_recording(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(EXAMPLE, "example.py", "exec"), namespace)
    result = namespace["run"](
        namespace["dat_path"],
        probe=namespace["probe"],
        dir_path=namespace["dir_path"],
        n_channels=385,
        dtype=np.int16,
        sample_rate=3e4,
    )  # again: nothing to redo
    assert isinstance(result, RunResult)
    phy = tmp_path / "kilosnake_output" / "results" / "imec_385_100s" / "phy"
    assert result.phy_dir == phy and result.params_py == phy / "params.py"
    sizes = validate_phy(phy)
    assert sizes["phylib_checked"] and sizes["n_channels"] == 384
    assert result.n_units > 0 and result.n_spikes == sizes["n_spikes"]
    params = read_params_py(phy)
    assert params["dat_path"] == "../../../../imec_385_100s.bin"
    assert params["n_channels_dat"] == 385 and params["hp_filtered"] is False
    np.testing.assert_array_equal(np.load(phy / "channel_map.npy"), np.arange(384))
    assert {"export_phy", "final_pass", "merge"} <= set(result.timings)
    assert result.wall_time_s < sum(result.timings.values())  # the second call reused stages
    assert os.path.isdir(tmp_path / "kilosnake_output" / "probe")
