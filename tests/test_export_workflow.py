"""The curation and export rules inside the workflow, on sorter outputs made by a fixture."""

import os
import shutil
import sys

import numpy as np
import pytest
from curation_fixtures import Unit, build_fixture, refractory_train
from workflow_runs import planned_rules, snakemake

from kilosnake.export.validate import validate_phy

MY_RULES = ["merge", "split", "cutoff", "export_phy"]


def run_rules(workdir, *args, config=()):
    """Run the curation and export rules (only those) towards the Phy folder; the caller checks
    the result."""
    return snakemake(
        workdir,
        "results/rec/phy",
        *args,
        "--allowed-rules",
        *MY_RULES,
        config=(
            f"dat={workdir / 'rec.bin'}",
            f"probe={workdir / 'probe'}",
            "n_channels=17",
            *config,
        ),
        cores=1,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workflow folder whose sorting stages are already done (fixture stores)."""
    tmp = tmp_path_factory.mktemp("wf")
    rng = np.random.default_rng(21)
    units = [Unit(refractory_train(rng, 15, 20), 0), Unit(refractory_train(rng, 15, 20), 1)]
    fx = build_fixture(tmp / "fixture", units, [4, 11], duration_s=20)
    results = tmp / "results" / "rec"
    results.mkdir(parents=True)
    for store in ("spikes", "templates", "whitening"):
        shutil.copytree(fx.folder / f"{store}.zarr", results / f"{store}.zarr")
    shutil.move(str(fx.dat), tmp / "rec.bin")
    (tmp / "probe").mkdir()
    text = fx.input_json.read_text().replace(str(fx.dat), str(tmp / "rec.bin"))
    (results / "input.json").write_text(text)
    done = run_rules(tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp


def test_rules_write_every_store_and_a_valid_phy_folder(workdir):
    results = workdir / "results" / "rec"
    for store in ("merge.zarr", "split.zarr", "cutoff.zarr"):
        assert (results / store / "zarr.json").is_file()
    assert validate_phy(results / "phy")["phylib_checked"]
    for rule in MY_RULES:
        assert "done in" in (results / "logs" / f"{rule}.log").read_text()
        assert (results / "benchmarks" / f"{rule}.tsv").is_file()


@pytest.mark.parametrize(
    "change,expected",
    [
        ("cutoff_fcont=0.2", {"cutoff", "export_phy"}),
        ("good_max_spread_um=50", {"cutoff", "export_phy"}),
        ("AUCsplit=0.95", {"split", "cutoff", "export_phy"}),
        ("merge_Q_max=0.1", {"merge", "split", "cutoff", "export_phy"}),
        ("gain=2", {"export_phy"}),
    ],
)
def test_a_parameter_change_reruns_its_stage_and_what_follows(workdir, change, expected):
    dry = run_rules(workdir, "-n", config=[change])
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert planned_rules(dry.output) == expected


def test_nothing_to_do_when_nothing_changed(workdir):
    nothing = run_rules(workdir, "-n")
    assert "Nothing to be done" in nothing.output
