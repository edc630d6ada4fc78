"""Crash and resume: a workflow killed with SIGKILL in the middle of a stage, then rerun with
``--rerun-incomplete``, gives the same Phy folder as an uninterrupted run; a store whose writer
died is never read as complete."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from workflow_runs import (
    TARGET,
    differing,
    output_digests,
    reference_run,
    results,
    resume,
    run_snakemake,
    run_until,
    stage_seconds,
)

from kilosnake.io.store import IncompleteStoreError, open_store, writing_store

#: stage -> its output store
STAGE_STORES = {
    "preprocess": "preprocessed.zarr",
    "learn": "templates.zarr",
    "final_pass": "spikes.zarr",
}


# --------------------------------------------------------------------------------------------
# a store whose writer was killed


SLOW_WRITER = """
import sys, time
import numpy as np
from kilosnake.io.store import writing_store
with writing_store(sys.argv[1], "test") as g:
    a = g.create_array("x", shape=(100, 10), chunks=(1, 10), dtype="float64")
    for i in range(100):
        a[i] = np.full(10, i)
        if i == 5:
            print("writing", flush=True)
        time.sleep(0.05)
"""


def test_a_store_killed_mid_write_is_never_read_as_complete(tmp_path):
    final = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(final)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = tmp_path / "out.zarr.tmp"
    assert partial.is_dir() and not final.exists()
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(partial)
    with pytest.raises(FileNotFoundError):
        open_store(final)
    with writing_store(final, "test") as g:  # a rerun replaces the leftover
        g.attrs["n"] = 1
    assert open_store(final).attrs["n"] == 1 and not partial.exists()


def test_a_store_without_its_marker_is_refused(tmp_path):
    import zarr

    g = zarr.open_group(str(tmp_path / "copied.zarr"), mode="w", zarr_format=3)
    g.create_array("x", shape=(3,), dtype="int64")[...] = np.arange(3)
    with pytest.raises(IncompleteStoreError):
        open_store(tmp_path / "copied.zarr")


def test_an_error_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with writing_store(tmp_path / "out.zarr", "test") as g:
            g.create_array("x", shape=(3,), dtype="int64")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


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
    """When to kill ``stage``: half-way through its reference duration, and (for the stages
    that write batch by batch) once its store has chunks on disk."""
    out = results(workdir)
    half_way = running_for(out / "logs" / f"{stage}.log", 0.5 * stage_seconds(reference, stage))
    if stage == "learn":  # writes its store at the end
        return half_way
    writing = chunks_written(out / f"{STAGE_STORES[stage]}.tmp", 1)
    return lambda: half_way() and writing()


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
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


def test_killed_in_every_long_stage_in_turn_resumes_to_the_same_outputs(reference, tmp_path):
    """One run killed in preprocess, resumed and killed in learn, resumed and killed in
    final_pass, then resumed to the end: every output equals the uninterrupted run's."""
    kill_in(tmp_path, reference, "preprocess")
    for stage in ("learn", "final_pass"):
        run_snakemake(tmp_path, "--unlock")
        kill_in(tmp_path, reference, stage, "--rerun-incomplete")
    resume(tmp_path)
    assert differing(output_digests(reference), output_digests(tmp_path)) == []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["preprocess", "learn", "final_pass"])
def test_killed_in_one_stage_resumes_to_the_same_outputs(reference, tmp_path, stage):
    kill_in(tmp_path, reference, stage)
    output = resume(tmp_path)
    assert f"rule {stage}:" in output
    assert differing(output_digests(reference), output_digests(tmp_path)) == []
