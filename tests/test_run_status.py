"""Honest status: a failed run says failed, outputs from other parameters are named, and a
mistaken recording description leaves the earlier results as they were."""

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import workflow_runs

from kilosnake.errors import InputError
from kilosnake.preprocess.check_input import check_input
from kilosnake.workflow.input_guard import REFUSED_LOG, guard_changed_inputs
from kilosnake.workflow.summary import (
    closing_lines,
    filesystem_now,
    recording_status,
    write_summary,
)

NT = 4096


def fake_phy(folder: Path) -> Path:
    phy = folder / "phy"
    phy.mkdir(parents=True)
    (phy / "params.py").write_text("dat_path = 'x'\n")
    np.save(phy / "spike_times.npy", np.arange(5, dtype=np.uint64))
    np.save(phy / "spike_clusters.npy", np.array([0, 0, 1, 1, 2], np.uint32))
    (phy / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n0\tgood\n1\tmua\n2\tmua\n")
    return phy


def write_log(folder: Path, stage: str, text: str, mtime: float | None = None) -> Path:
    log = folder / "logs" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    if mtime is not None:
        os.utime(log, (mtime, mtime))
    return log


FAILED = (
    "01:02:03 INFO kilosnake: cutoff started\n"
    "01:02:04 ERROR kilosnake: cutoff failed: Th[1] must be below Th[0]\n"
    "  fix: set Th to a pair [a, b] with a > b\n"
)


def test_a_stage_that_failed_in_this_run_makes_the_recording_failed(tmp_path):
    fake_phy(tmp_path / "a")  # a Phy folder from an earlier, good run
    started = time.time() - 1
    write_log(tmp_path / "a", "cutoff", FAILED)
    row = recording_status("a", tmp_path, since=started)
    assert row["status"] == "failed" and row["stage"] == "cutoff"
    assert row["message"] == "Th[1] must be below Th[0]"  # the first line of the error
    assert row["log"].endswith("logs/cutoff.log")
    assert closing_lines(row, tmp_path)[0] == "a: FAILED in cutoff: Th[1] must be below Th[0]"


def test_a_failure_of_an_earlier_run_does_not_count_once_the_run_succeeds(tmp_path):
    fake_phy(tmp_path / "a")
    write_log(tmp_path / "a", "cutoff", FAILED, mtime=time.time() - 100)
    assert recording_status("a", tmp_path, since=time.time() - 10)["status"] == "done"
    # without the run's start, a failure logged after the Phy folder was written still counts
    assert recording_status("a", tmp_path)["status"] == "done"
    write_log(tmp_path / "a", "report", FAILED.replace("cutoff", "report"))
    assert recording_status("a", tmp_path)["status"] == "failed"


def test_a_log_written_just_after_the_run_started_counts_as_this_runs(tmp_path):
    # file times come from the filesystem's clock, which may run behind time.time()
    (tmp_path / "rec").mkdir()
    for attempt in range(200):
        since = filesystem_now(tmp_path)
        log = write_log(
            tmp_path / "rec", "check_input", f"x ERROR kilosnake: check_input failed: {attempt}\n"
        )
        assert log.stat().st_mtime >= since
        assert recording_status("rec", tmp_path, since=since)["status"] == "failed"
    assert filesystem_now(tmp_path / "not there") == 0.0
    assert not list(tmp_path.glob(".clock-*"))  # the marker file is gone


def test_an_unexpected_error_gives_its_last_error_line(tmp_path):
    fake_phy(tmp_path / "a")
    started = time.time() - 1
    write_log(
        tmp_path / "a",
        "learn",
        "01:00:00 ERROR kilosnake: learn failed with an unexpected error\nTraceback...\n"
        "ValueError: operands could not be broadcast\n",
    )
    row = recording_status("a", tmp_path, since=started)
    assert (
        row["stage"] == "learn" and row["message"] == "ValueError: operands could not be broadcast"
    )


def write_store(folder: Path, name: str, params: dict) -> None:
    store = folder / name
    store.mkdir(parents=True)
    attrs = {"attributes": {"complete": True, "params": params}}
    (store / "zarr.json").write_text(json.dumps(attrs))


def test_outputs_made_with_other_parameters_are_named(tmp_path):
    folder = tmp_path / "a"
    fake_phy(folder)
    write_store(folder, "cutoff.zarr", {"Th": [10.0, 4.0], "cutoff_fcont": 0.1, "seed": 42})
    write_store(folder, "whitening.zarr", {"gpu_memory_gb": 2.0, "seed": 42})
    row = recording_status("a", tmp_path, config={"Th": [8, 3], "gpu_memory_gb": 4})
    assert row["status"] == "done"
    assert (
        "earlier run with other inputs" in row["note"]
        and "Th [10.0, 4.0] (now [8, 3])" in row["note"]
    )
    assert "gpu_memory_gb" not in row["note"]  # an execution knob, not a result parameter
    assert recording_status("a", tmp_path, config={})["note"] == ""


def test_the_closing_lines_say_where_everything_is(tmp_path):
    folder = tmp_path / "demo"
    fake_phy(folder)
    (folder / "report.html").write_text("<html></html>")
    (folder / "scorecard.txt").write_text(
        "Summary\n  well detected (accuracy >= 0.8)     9 / 10\n"
        "  mean accuracy / recall              0.926 / 0.927\n"
    )
    text = write_summary(["demo"], tmp_path / "summary.tsv", tmp_path)
    assert "1 of 1 recordings done" in text
    assert "demo: done, 3 units (1 good, 2 mua), 5 spikes" in text
    assert (
        f"Phy folder: {folder / 'phy'}" in text and f"report:     {folder / 'report.html'}" in text
    )
    assert "well detected (accuracy >= 0.8) 9 / 10; mean accuracy / recall 0.926 / 0.927" in text
    rows = list(csv.DictReader((tmp_path / "summary.tsv").open(), delimiter="\t"))
    assert rows[0]["n_good"] == "1" and rows[0]["status"] == "done"


# --------------------------------------------------------------------------------------------
# a mistaken recording description


@pytest.fixture
def checked(tmp_path):
    """A short generated recording, checked once as the workflow does (input.json)."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=1.0)
    paths = generate(cfg, tmp_path / "data", name="rec", seed=1)
    rec = {
        "dat": str(paths.bin),
        "probe": str(paths.probe),
        "n_channels": cfg.n_channels + int(cfg.sync_channel),
        "dtype": "int16",
        "sample_rate": cfg.sample_rate,
        "uv_per_bit": None,
    }
    results = tmp_path / "results"
    info = results / "rec" / "input.json"
    info.parent.mkdir(parents=True)
    check_input(
        **{k: rec[k] for k in ("dat", "n_channels", "dtype", "sample_rate")},
        probe_source=rec["probe"],
        uv_per_bit=None,
        NT=NT,
        out=info,
    )
    return rec, results


def test_a_mistaken_description_is_refused_before_anything_is_removed(checked):
    rec, results = checked
    info = results / "rec" / "input.json"
    before = info.read_bytes()
    wrong = {**rec, "n_channels": 2 * rec["n_channels"]}
    with pytest.raises(InputError) as err:
        guard_changed_inputs({"rec": wrong}, NT, results)
    message = str(err.value)
    assert "recording rec" in message and "fix:" in message
    assert f"n_channels {rec['n_channels']} (now {wrong['n_channels']})" in message
    assert info.read_bytes() == before  # untouched
    assert (results / "rec" / "logs" / REFUSED_LOG).is_file()
    rows = list(csv.DictReader((results / "summary.tsv").open(), delimiter="\t"))
    assert rows[0]["status"] == "failed" and rows[0]["stage"] == "check_input"
    assert "n_channels" in rows[0]["note"]
    # the value corrected: nothing to check, the refusal is lifted and the summary rewritten
    guard_changed_inputs({"rec": rec}, NT, results)
    assert not (results / "rec" / "logs" / REFUSED_LOG).exists()
    rows = list(csv.DictReader((results / "summary.tsv").open(), delimiter="\t"))
    assert rows[0]["status"] != "failed"


def test_a_valid_new_description_is_left_to_the_rule(checked):
    rec, results = checked
    guard_changed_inputs({"rec": {**rec, "uv_per_bit": 2.5}}, NT, results)  # passes: no error
    assert not (results / "summary.tsv").exists()


def test_an_input_json_without_its_description_is_not_checked(checked):
    rec, results = checked
    info = results / "rec" / "input.json"
    data = json.loads(info.read_text())
    del data["requested"]  # written by an older version
    info.write_text(json.dumps(data))
    guard_changed_inputs({"rec": {**rec, "n_channels": 7}}, NT, results)


def snakemake(workdir: Path, *args: str, config=()):
    """The workflow on the CPU in ``workdir``, its failure left to the test."""
    return workflow_runs.snakemake(workdir, *args, config=("device=cpu", *config), check=False)


SORTING_RULES = ("whitening", "preprocess", "drift", "detect", "learn", "final_pass", "export_phy")


@pytest.mark.slow
def test_a_failed_input_check_then_the_fix_reruns_nothing(tmp_path):
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=4.0)
    paths = generate(cfg, tmp_path / "data", name="rec", seed=1)
    n = cfg.n_channels + int(cfg.sync_channel)
    good = [f"dat={paths.bin}", f"probe={paths.probe}", f"n_channels={n}"]
    done = snakemake(tmp_path, config=good)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rec: done" in done.stdout and "Phy folder:" in done.stdout
    results = tmp_path / "results" / "rec"
    kept = {p: p.stat().st_mtime_ns for p in results.glob("*") if p.name not in ("logs",)}

    wrong = good[:2] + [f"n_channels={2 * n}"] + good[3:]
    failed = snakemake(tmp_path, config=wrong)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "recording rec" in out and "fix:" in out, out[-3000:]
    rows = list(csv.DictReader((tmp_path / "results/summary.tsv").open(), delimiter="\t"))
    assert rows[0]["status"] == "failed" and rows[0]["stage"] == "check_input", rows
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # every output as it was

    dry = snakemake(tmp_path, "-n", config=good)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
    for rule in SORTING_RULES:
        assert f"rule {rule}:" not in dry.stdout
    fixed = snakemake(tmp_path, config=good)
    assert fixed.returncode == 0
    rows = list(csv.DictReader((tmp_path / "results/summary.tsv").open(), delimiter="\t"))
    assert rows[0]["status"] == "done", rows


@pytest.mark.slow
def test_a_failed_job_is_reported_failed_although_an_older_phy_folder_exists(tmp_path):
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=4.0)
    paths = generate(cfg, tmp_path / "data", name="rec", seed=1)
    n = cfg.n_channels + int(cfg.sync_channel)
    good = [f"dat={paths.bin}", f"probe={paths.probe}", f"n_channels={n}"]
    assert snakemake(tmp_path, config=good).returncode == 0
    # the raw file replaced by one that is not a whole number of samples: the rerun job fails
    raw = Path(paths.bin)
    raw.write_bytes(raw.read_bytes()[:-3])
    failed = snakemake(tmp_path, config=good)
    assert failed.returncode != 0
    rows = list(csv.DictReader((tmp_path / "results/summary.tsv").open(), delimiter="\t"))
    assert rows[0]["status"] == "failed" and rows[0]["stage"] == "check_input", rows
    assert "FAILED in check_input" in failed.stdout, failed.stdout[-2000:]
    assert (tmp_path / "results/rec/phy/params.py").is_file()  # the old sort is still there
