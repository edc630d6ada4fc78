"""The workflow on the generated demo recording: the preprocessed traces, provenance, logs and
what a rerun redoes."""

import os

import numpy as np
import pytest
from workflow_runs import planned_rules, snakemake

from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader

TARGET = "results/demo/preprocessed.zarr"


pytestmark = pytest.mark.slow


def planned(workdir, *config):
    """Rules a dry run towards the preprocessed traces would execute."""
    dry = snakemake(workdir, "--dry-run", TARGET, config=("device=cpu", *config))
    return planned_rules(dry.output)


@pytest.fixture(scope="module")
def demo(demo_sort):
    return demo_sort


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
    assert planned(demo) == set()


def test_changed_filter_reruns_only_preprocessing(demo):
    assert planned(demo, "fshigh=250") == {
        "whitening",
        "preprocess",
    }


def test_touched_raw_file_reruns_from_the_input_check(demo):
    raw = demo / "resources/demo/demo.bin"
    before = os.stat(raw)
    later = os.path.getmtime(demo / TARGET) + 10
    os.utime(raw, (later, later))
    try:
        assert planned(demo) == {"check_input", "whitening", "preprocess"}
    finally:  # the sort is shared with other modules
        os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
