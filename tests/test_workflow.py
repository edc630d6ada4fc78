"""The workflow on the generated demo recording, up to the preprocessed traces."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader

ROOT = Path(__file__).resolve().parents[1]
TARGET = "results/demo/preprocessed.zarr"


def snakemake(workdir, *args):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_rules(workdir, *args):
    """Rules a dry run would execute."""
    out = snakemake(workdir, "--dry-run", TARGET, *args)
    return set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M)) - {"all"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    snakemake(workdir, TARGET, "--config", "device=cpu")
    return workdir


def test_preprocessed_demo_is_white(demo):
    r = PreprocessedReader(demo / TARGET)
    x = r.read(0, r.n_samples)[3000:-3000].astype(np.float64)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=0.1)
    c = np.corrcoef(x.T)
    d = np.hypot(r.probe.xc[:, None] - r.probe.xc, r.probe.yc[:, None] - r.probe.yc)
    neighbours = (d > 0) & (d < 50)
    assert np.abs(c[neighbours]).max() < 0.15


def test_stores_carry_provenance(demo):
    g = open_store(demo / TARGET)
    for key in ("kilosnake_version", "params", "device", "seed", "stage"):
        assert key in g.attrs
    assert g.attrs["device"] == "cpu" and g.attrs["params"]["fshigh"] == 300.0
    log = (demo / "results/demo/logs/preprocess.log").read_text().splitlines()
    assert "non-default parameters: device='cpu'" in log[0]
    assert "peak host memory" in log[-1]


def test_rerun_after_success_does_nothing(demo):
    assert planned_rules(demo, "--config", "device=cpu") == set()


def test_changed_filter_reruns_only_preprocessing(demo):
    assert planned_rules(demo, "--config", "device=cpu", "fshigh=250") == {
        "whitening",
        "preprocess",
    }


def test_touched_raw_file_reruns_from_the_input_check(demo):
    raw = demo / "resources/demo/demo.bin"
    later = os.path.getmtime(demo / TARGET) + 10
    os.utime(raw, (later, later))
    assert planned_rules(demo, "--config", "device=cpu") == {
        "check_input",
        "whitening",
        "preprocess",
    }
