"""Awkward inputs through the whole workflow: a raw file in a folder whose name holds quotes and
spaces, with a dead and a saturated channel; a recording of pure noise; a recordings table with
a broken and a missing recording (--keep-going)."""

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from inputs import write_noise_recording, write_probe_json, write_table
from workflow_runs import snakemake

from kilosnake.export.tables import params_py_text
from kilosnake.export.validate import validate_phy
from kilosnake.io.phy import read_params_py
from kilosnake.io.store import open_store
from kilosnake.workflow.recordings import recording_name

DEAD_ROW, STUCK_ROW = 5, 9


pytestmark = pytest.mark.slow


def sort(workdir: Path, dat: Path, probe: Path, n_channels: int, *config: str, targets=("phy",)):
    """Sort ``dat`` up to its Phy folder (or ``targets``); return the finished process and the
    results folder."""
    out = Path("results") / recording_name(str(dat))
    done = snakemake(
        workdir,
        *(str(out / t) for t in targets),
        config=("device=cpu", f"dat={dat}", f"probe={probe}", f"n_channels={n_channels}", *config),
        check=False,
    )
    return done, workdir / out


def assert_only_literal_assignments(text: str) -> dict:
    """``params.py`` must be plain ``name = literal`` lines: executing it can do nothing else."""
    values = {}
    for node in ast.parse(text).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        assert isinstance(node.targets[0], ast.Name), ast.dump(node)
        assert isinstance(node.value, ast.Constant), ast.dump(node)
        values[node.targets[0].id] = node.value.value
    return values


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """A 10 s generated recording in ``my "rec" 1/it's rec.bin``, row 5 dead, row 9 stuck."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    workdir = tmp_path_factory.mktemp("awkward")
    folder = workdir / 'my "rec" 1'
    paths = generate(
        preset_config("demo", duration_s=10.0, n_units=6), folder, name="it's rec", seed=5
    )
    x = np.fromfile(paths.bin, np.int16).reshape(-1, 32)
    x[:, DEAD_ROW] = 0
    x[:, STUCK_ROW] = 32767
    x.tofile(paths.bin)
    done, results = sort(workdir, paths.bin, paths.probe, 32)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return paths, results


def test_awkward_path_gives_a_phy_folder_phylib_loads(awkward):
    paths, results = awkward
    sizes = validate_phy(results / "phy")  # loads it with phylib, reads a waveform per cluster
    assert sizes["phylib_checked"] and sizes["n_spikes"] > 100
    dat = (results / "phy" / sizes["params"]["dat_path"]).resolve()
    assert dat == paths.bin.resolve()


def test_params_py_with_quotes_in_the_path_is_only_literals(awkward):
    _, results = awkward
    values = assert_only_literal_assignments((results / "phy" / "params.py").read_text())
    assert values == read_params_py(results / "phy")
    assert '"rec"' in values["dat_path"] and "it's rec.bin" in values["dat_path"]


@pytest.mark.parametrize(
    "path",
    [
        'my "rec" 1/it\'s rec.bin',
        "x'; import os; os.system('touch pwned'); y='.bin",
        'a\nimport os\n"b.bin',
        "C:\\data\\rec.bin",
        "données/µ rec.bin",
    ],
)
def test_params_py_text_never_holds_code(tmp_path, path):
    text = params_py_text(path, 32, "int16", 30000.0, 20.0)
    values = assert_only_literal_assignments(text)
    assert values["dat_path"] == path
    namespace = {}
    exec(compile(text, "params.py", "exec"), namespace)  # what phylib does
    assert namespace["dat_path"] == path and not (tmp_path / "pwned").exists()


def test_dead_and_stuck_channels_are_left_out_of_the_sort(awkward):
    _, results = awkward
    rows = [r for r in range(32) if r not in (DEAD_ROW, STUCK_ROW)]
    report = json.loads((results / "input.json").read_text())
    assert [(c["row"], c["reason"]) for c in report["excluded_channels"]] == [
        (DEAD_ROW, "flat"),
        (STUCK_ROW, "saturated"),
    ]
    for store in ("whitening.zarr", "preprocessed.zarr"):
        np.testing.assert_array_equal(open_store(results / store)["chan_map"][...], rows)
    np.testing.assert_array_equal(np.load(results / "phy" / "channel_map.npy"), rows)
    log = (results / "logs" / "check_input.log").read_text()
    assert f"(row {DEAD_ROW}) is flat" in log and f"(row {STUCK_ROW}) is saturated" in log


#: one per-spike array of each store, and its axis of spikes
PER_SPIKE_ARRAYS = {
    "spikes.zarr": "time",
    "merge.zarr": "cluster",
    "split.zarr": "cluster",
    "cutoff.zarr": "keep",
}


def test_pure_noise_gives_an_empty_valid_phy_folder_and_report(tmp_path):
    dat = write_noise_recording(tmp_path, n_samples=5 * 30000)
    done, results = sort(
        tmp_path, dat, write_probe_json(tmp_path), 32, targets=("phy", "report.html")
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    sizes = validate_phy(results / "phy")
    assert sizes["n_spikes"] == 0 and not sizes["phylib_checked"]
    assert np.load(results / "phy" / "spike_times.npy").shape == (0,)
    assert np.load(results / "phy" / "pc_features.npy").shape[0] == 0
    assert np.load(results / "phy" / "template_features.npy").shape[0] == 0
    for store, name in PER_SPIKE_ARRAYS.items():
        assert open_store(results / store)[name].shape == (0,), store
    assert open_store(results / "templates.zarr")["W"].shape[1] == 0
    for stage in ("detect", "learn", "final_pass", "merge", "split", "cutoff", "export_phy"):
        assert "no spikes found" in (results / "logs" / f"{stage}.log").read_text(), stage
    assert "no spikes found" in (results / "report.html").read_text()


# --------------------------------------------------------------------------------------------
# many recordings, one of them broken


def test_keep_going_sorts_the_good_recording_and_reports_the_broken_and_missing_ones(tmp_path):
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=3.0)
    good = generate(cfg, tmp_path / "data", name="good", seed=1)
    broken = tmp_path / "data" / "broken.bin"
    broken.write_bytes(good.bin.read_bytes()[:-3])  # not a whole number of samples
    missing = tmp_path / "data" / "missing.bin"  # never written
    n_channels = cfg.n_channels + int(cfg.sync_channel)
    table = write_table(
        tmp_path / "recordings.tsv",
        ("good", good.bin, good.probe, n_channels, cfg.sample_rate, "int16"),
        ("broken", broken, good.probe, n_channels, cfg.sample_rate, "int16"),
        ("missing", missing, good.probe, n_channels, cfg.sample_rate, "int16"),
    )
    result = snakemake(
        tmp_path, "--keep-going", config=(f"recordings={table}", "device=cpu"), check=False
    )
    out = result.output
    assert result.returncode != 0, out[-3000:]  # a failed recording fails the run ...
    assert (tmp_path / "results/good/phy/params.py").is_file(), out[-3000:]  # ... not the others
    summary = tmp_path / "results/summary.tsv"
    assert summary.is_file(), out[-3000:]
    rows = {r["recording"]: r for r in csv.DictReader(summary.open(), delimiter="\t")}
    assert list(rows) == ["good", "broken", "missing"]
    assert rows["good"]["status"] == "done" and int(rows["good"]["n_units"]) > 0
    for name in ("broken", "missing"):
        assert rows[name]["status"] == "failed" and rows[name]["stage"] == "check_input", rows
        assert rows[name]["message"] and rows[name]["log"].endswith("check_input.log")
    # the missing file's own job says what is wrong and what to do
    log = (tmp_path / "results/missing/logs/check_input.log").read_text()
    assert "missing.bin" in log and "does not exist" in log and "fix" in log.lower(), log
    assert "1 of 3 recordings done" in out
