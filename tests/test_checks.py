"""check_input: every bad input named with its fix, good inputs described in input.json."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kilosnake.checks import check_input
from kilosnake.errors import InputError
from kilosnake.probe import neuropixels_like

from inputs import write_noise_recording, write_probe_folder, write_probe_json

ROOT = Path(__file__).resolve().parents[1]
NT = 8192


def _probe_with(**changes):
    p = neuropixels_like(32)
    for name, fn in changes.items():
        setattr(p, name, fn(getattr(p, name).copy()))
    return p


def _set(i, v):
    def f(a):
        a[i] = v
        return a
    return f


def bad_size(tmp):  # one sample short of a whole row
    path = write_noise_recording(tmp)
    with open(path, "ab") as f:
        f.write(b"\0\0")
    return dict(dat=path, probe=write_probe_json(tmp)), "not a multiple"


def index_out_of_range(tmp):
    return dict(dat=write_noise_recording(tmp), probe=write_probe_folder(
        tmp / "geom", _probe_with(chan_map=_set(0, 40)))), "out of range"


def duplicated_index(tmp):
    return dict(dat=write_noise_recording(tmp), probe=write_probe_folder(
        tmp / "geom", _probe_with(chan_map=_set(1, 0)))), "twice"


def one_based_map(tmp):
    return dict(dat=write_noise_recording(tmp), probe=write_probe_folder(
        tmp / "geom", _probe_with(chan_map=lambda a: a + 1))), "1-based"


def duplicate_positions(tmp):
    p = _probe_with(xc=_set(1, 43.0), yc=_set(1, 20.0))
    return dict(dat=write_noise_recording(tmp), probe=write_probe_folder(tmp / "geom", p)), \
        "share the position"


def nan_positions(tmp):
    return dict(dat=write_noise_recording(tmp), probe=write_probe_folder(
        tmp / "geom", _probe_with(yc=_set(3, np.nan)))), "NaN"


def count_mismatch(tmp):
    folder = write_probe_folder(tmp / "geom", neuropixels_like(32))
    np.save(folder / "xc.npy", np.load(folder / "xc.npy")[:-2])
    return dict(dat=write_noise_recording(tmp), probe=folder), "differ"


def too_short(tmp):
    return dict(dat=write_noise_recording(tmp, n_samples=NT - 1),
                probe=write_probe_json(tmp)), "shorter than one batch"


def empty_file(tmp):
    (tmp / "rec.bin").write_bytes(b"")
    return dict(dat=tmp / "rec.bin", probe=write_probe_json(tmp)), "empty"


def missing_file(tmp):
    return dict(dat=tmp / "nothere.bin", probe=write_probe_json(tmp)), "does not exist"


def missing_probe(tmp):
    return dict(dat=write_noise_recording(tmp), probe=None), "no probe"


BAD_INPUTS = [bad_size, index_out_of_range, duplicated_index, one_based_map,
              duplicate_positions, nan_positions, count_mismatch, too_short, empty_file,
              missing_file, missing_probe]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.__name__)
def test_bad_input_is_named_with_its_fix(tmp_path, case):
    paths, message = case(tmp_path)
    out = tmp_path / "input.json"
    with pytest.raises(InputError, match=message) as err:
        check_input(paths["dat"], paths["probe"], n_channels=32, NT=NT, out=out)
    assert "fix:" in str(err.value)
    assert not out.exists()


def run_workflow(workdir: Path, *config: str, target="results/rec/input.json"):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "-s", str(ROOT / "Snakefile"),
           "-d", str(workdir), target, "--config", *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", [bad_size, one_based_map, too_short, missing_probe],
                         ids=lambda c: c.__name__)
def test_workflow_stops_before_heavy_work(tmp_path, case):
    paths, message = case(tmp_path)
    config = [f"dat={paths['dat']}", f"n_channels=32", f"NT={NT}"]
    if paths["probe"] is not None:
        config.append(f"probe={paths['probe']}")
    result = run_workflow(tmp_path, *config, target="results/rec/preprocessed.zarr")
    assert result.returncode != 0
    log = (tmp_path / "results/rec/logs/check_input.log").read_text()
    assert message in log and "fix:" in log
    outputs = [p for p in (tmp_path / "results").rglob("*")  # the run summary is allowed
               if p.is_file() and p.parent.name not in ("logs", "benchmarks")
               and p.name != "summary.tsv"]
    assert outputs == [] and not list((tmp_path / "results").rglob("*.zarr*"))


def test_good_input_is_described(tmp_path):
    dat = write_noise_recording(tmp_path, n_samples=3 * NT, extra_channels=1)
    report = check_input(dat, write_probe_json(tmp_path), n_channels=33, NT=NT,
                         out=tmp_path / "input.json")
    on_disk = json.loads((tmp_path / "input.json").read_text())
    assert on_disk == report
    assert report["n_samples"] == 3 * NT and report["n_batches"] == 3
    assert report["n_channels_total"] == 33 and len(report["rms"]) == 32
    assert 9 < np.median(report["rms"]) < 11
    assert max(report["saturation_fraction"]) == 0


def test_saturation_is_measured(tmp_path):
    x = np.zeros((2 * NT, 32), np.int16)
    x[:, 5] = 32767
    x.tofile(tmp_path / "rec.bin")
    report = check_input(tmp_path / "rec.bin", write_probe_json(tmp_path), n_channels=32, NT=NT)
    assert report["saturation_fraction"][5] == 1.0 and report["saturation_fraction"][4] == 0


def test_spikeglx_meta_fills_channels_rate_and_gain(tmp_path):
    dat = write_noise_recording(tmp_path, n_samples=2 * NT, extra_channels=1)
    (tmp_path / "rec.meta").write_text(
        "nSavedChans=33\nimSampRate=30000.5\nimAiRangeMax=0.6\nimMaxInt=512\n"
        "~imroTbl=(0,384)(0 0 0 500 250 1)(1 0 0 500 250 1)\n")
    report = check_input(dat, write_probe_json(tmp_path), NT=NT)
    assert report["n_channels_total"] == 33 and report["sample_rate"] == 30000.5
    assert report["uv_per_bit"] == pytest.approx(0.6 / 512 / 500 * 1e6)
