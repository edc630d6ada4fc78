"""pykilosort's Python API: its arguments and errors (the README example run end to end:
``test_api_workflow.py``)."""

import numpy as np
import pytest

from kilosnake.api import Bunch, RunError, run, stage_or_default


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
