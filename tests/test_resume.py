"""Crash and resume: a workflow killed with SIGKILL in the middle of a stage, then rerun with
``--rerun-incomplete``, gives the same Phy folder as an uninterrupted run (a store whose writer
died is never read as complete: ``test_store_writes.py``)."""

import time

import pytest
from workflow_runs import (
    TARGET,
    differing,
    output_digests,
    results,
    resume,
    run_until,
    snakemake,
    stage_seconds,
)

from kilosnake.io.store import IncompleteStoreError, open_store

#: stage -> its output store
STAGE_STORES = {
    "preprocess": "preprocessed.zarr",
    "learn": "templates.zarr",
    "final_pass": "spikes.zarr",
}

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------
# the workflow killed in the middle of a stage


def chunks_written(folder, least: int):
    """True once ``least`` chunk files exist below ``folder`` (a store being written)."""

    def ready():
        return folder.is_dir() and sum(1 for p in folder.rglob("c/*") if p.is_file()) >= least

    return ready


def running_for(log, seconds: float):
    """True once the stage's log has existed for ``seconds`` (the stage is under way)."""
    started = []

    def ready():
        if not started and log.exists():
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= seconds

    return ready


def kill_moment(workdir, reference, stage: str):
    """When to kill ``stage``: a quarter of the way through its reference duration (early
    enough to be inside the stage on a machine faster or less loaded than the reference run's),
    and (for the stages that write batch by batch) once its store has chunks on disk."""
    out = results(workdir)
    under_way = running_for(out / "logs" / f"{stage}.log", 0.25 * stage_seconds(reference, stage))
    if stage == "learn":  # writes its store at the end
        return under_way
    writing = chunks_written(out / f"{STAGE_STORES[stage]}.tmp", 1)
    return lambda: under_way() and writing()


def kill_in(workdir, reference, stage: str, *args: str) -> None:
    """Run the workflow, SIGKILL it in the middle of ``stage``, check nothing was published."""
    run_until(workdir, kill_moment(workdir, reference, stage), TARGET, *args)
    store = results(workdir) / STAGE_STORES[stage]
    assert not store.exists(), f"{stage} had finished before the kill"
    partial = store.with_name(store.name + ".tmp")
    if partial.exists():
        with pytest.raises(IncompleteStoreError):
            open_store(partial)


@pytest.fixture(scope="module")
def reference(demo_sort):
    return demo_sort


def test_killed_in_every_long_stage_in_turn_resumes_to_the_same_outputs(reference, tmp_path):
    """One run killed in preprocess, resumed and killed in learn, resumed and killed in
    final_pass, then resumed to the end: every output equals the uninterrupted run's."""
    kill_in(tmp_path, reference, "preprocess")
    for stage in ("learn", "final_pass"):
        snakemake(tmp_path, "--unlock")
        kill_in(tmp_path, reference, stage, "--rerun-incomplete")
    resume(tmp_path)
    assert differing(output_digests(reference), output_digests(tmp_path)) == []


@pytest.mark.parametrize("stage", ["preprocess", "learn", "final_pass"])
def test_killed_in_one_stage_resumes_to_the_same_outputs(reference, tmp_path, stage):
    kill_in(tmp_path, reference, stage)
    output = resume(tmp_path)
    assert f"rule {stage}:" in output
    assert differing(output_digests(reference), output_digests(tmp_path)) == []
