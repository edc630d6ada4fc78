"""The parameter table, and the files generated from it."""

from pathlib import Path

import pytest
import yaml

import kilosnake.params as kp

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rel", sorted(kp.GENERATED_FILES))
def test_generated_files_are_up_to_date(rel):
    assert (ROOT / rel).read_text() == kp.GENERATED_FILES[rel](), (
        f"{rel} is stale: run `python -m kilosnake.params`"
    )


def test_config_yaml_holds_every_default():
    assert yaml.safe_load((ROOT / "config/config.yaml").read_text()) == kp.defaults()


def test_every_parameter_has_a_known_stage_and_a_description():
    for p in kp.PARAMS:
        assert p.stage in kp.STAGES, p.name
        assert len(p.description) > 10, p.name


def test_kilosort_parameters_keep_their_defaults():
    d = kp.defaults()
    assert (d["fshigh"], d["Th"], d["lam"], d["NT"], d["ntbuff"]) == (
        300.0,
        [10.0, 4.0],
        10.0,
        65472,
        64,
    )
    assert (d["whiteningRange"], d["scaleproc"], d["nt0"], d["nt0min"]) == (32, 200.0, 61, 20)


def test_command_line_strings_are_coerced():
    c = kp.coerce_config({"Th": ["8", "3"], "fslow": "null", "fshigh": "250", "dat": "x.bin"})
    assert c == {"Th": [8, 3], "fslow": None, "fshigh": 250, "dat": "x.bin"}


def test_schema_rejects_wrong_types_and_ranges():
    jsonschema = pytest.importorskip("jsonschema")
    schema = kp.config_schema()
    jsonschema.validate(kp.defaults(), schema)
    for bad in (
        {"fshigh": "high"},
        {"fshigh": -5},
        {"device": "tpu"},
        {"Th": [1]},
        {"no_such_key": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**kp.defaults(), **bad}, schema)


def test_non_default_lists_only_changes(caplog):
    values = kp.resolve({"fshigh": 500.0})
    assert kp.non_default(values) == {"fshigh": 500.0}
    with caplog.at_level("INFO"):
        kp.log_non_default(values)
    assert "fshigh=500.0" in caplog.text


def test_stage_names_select_the_stage():
    assert "fshigh" in kp.stage_names("preprocess")
    assert "fshigh" not in kp.stage_names("whitening")
    with pytest.raises(KeyError):
        kp.stage_names("nonsense")
