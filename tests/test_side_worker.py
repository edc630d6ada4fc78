"""The side worker: the pictures and the QC report run in one Python of their own, started once.

A job handed to the worker must give what the same job gives in the calling process, byte for
byte; a failed stage must come back as a failed status while the worker goes on serving; a
worker that dies must fail its job with a message that names the fix; and the worker must end
with the process that started it.
"""

import re
import time
from pathlib import Path

import pytest

from kilosnake.workflow import side_worker
from kilosnake.workflow.side_worker import SideWorker, SideWorkerLost, run_in_side_worker
from kilosnake.workflow.stages import StageJob, run_stage


def drift_plot_job(folder: Path, drift_store, name: str) -> StageJob:
    """A drift_plot job drawing ``drift_store`` into ``folder``."""
    return StageJob(
        "drift_plot",
        input={"drift": str(drift_store)},
        output={},
        inputs=[str(drift_store)],
        outputs=[str(folder / f"{name}.png")],
        params={"p": {}},
        log=str(folder / f"{name}.log"),
    )


def job_file(job: StageJob, folder: Path, name: str) -> Path:
    path = folder / f"{name}.job.json"
    job.write_json(path)
    return path


def logged_pid(log: Path) -> int:
    return int(re.search(r"\bpid (\d+)", log.read_text())[1])


def wait_for_exit(process, timeout: float = 10.0):
    try:
        return process.wait(timeout)
    except Exception:  # still running: the test fails on the None
        return None


@pytest.fixture
def fresh_workers():
    """No worker left from an earlier test, none left to the next."""
    side_worker.close_side_workers()
    yield
    side_worker.close_side_workers()


def test_a_job_in_the_side_worker_gives_what_it_gives_here(demo_sort, tmp_path, fresh_workers):
    drift = demo_sort / "results/demo/drift.zarr"
    here = drift_plot_job(tmp_path, drift, "here")
    run_stage(here)
    for name in ("first", "second"):
        status = run_in_side_worker(job_file(drift_plot_job(tmp_path, drift, name), tmp_path, name))
        assert status == 0
        assert (tmp_path / f"{name}.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    # both jobs ran in one worker, a process other than this one
    pids = {logged_pid(tmp_path / f"{name}.log") for name in ("first", "second")}
    assert len(pids) == 1 and pids != {logged_pid(tmp_path / "here.log")}


def test_a_failed_stage_is_a_failed_status_and_the_worker_goes_on(
    demo_sort, tmp_path, fresh_workers
):
    missing = drift_plot_job(tmp_path, tmp_path / "no-such-drift.zarr", "missing")
    assert run_in_side_worker(job_file(missing, tmp_path, "missing")) != 0
    assert not (tmp_path / "missing.png").exists()
    good = drift_plot_job(tmp_path, demo_sort / "results/demo/drift.zarr", "good")
    assert run_in_side_worker(job_file(good, tmp_path, "good")) == 0
    assert logged_pid(tmp_path / "good.log") == logged_pid(tmp_path / "missing.log")


def test_a_worker_that_died_fails_its_job_and_names_the_fix(demo_sort, tmp_path):
    worker = SideWorker()
    worker.process.kill()
    worker.process.wait()
    job = drift_plot_job(tmp_path, demo_sort / "results/demo/drift.zarr", "lost")
    with pytest.raises(SideWorkerLost, match="side_pictures_in_process=true"):
        worker.run(job_file(job, tmp_path, "lost"))
    worker.close()


def test_a_worker_ends_when_its_pipes_close(fresh_workers):
    worker = SideWorker()
    time.sleep(0.2)
    assert worker.process.poll() is None
    worker.close()
    assert wait_for_exit(worker.process) == 0


def test_the_workflow_draws_its_pictures_and_report_in_a_side_worker(demo_sort):
    logs = demo_sort / "results/demo/logs"
    pictures = {logged_pid(logs / f"{rule}.log") for rule in ("input_report", "drift_plot")}
    main = {logged_pid(logs / f"{rule}.log") for rule in ("check_input", "learn", "export_phy")}
    assert len(main) == 1 and not pictures & main
    # both pictures are done when the report starts: it runs in a worker one of them started
    assert logged_pid(logs / "report.log") in pictures


def test_a_job_runs_in_the_folder_its_caller_is_in(demo_sort, tmp_path, monkeypatch, fresh_workers):
    drift = demo_sort / "results/demo/drift.zarr"
    for name in ("one", "two"):  # one worker, two runs in two folders, relative paths
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        job = drift_plot_job(Path("."), drift, "plot")
        assert run_in_side_worker(job_file(job, Path("."), "plot")) == 0
        assert (folder / "plot.png").is_file()
    assert logged_pid(tmp_path / "one/plot.log") == logged_pid(tmp_path / "two/plot.log")
