"""A Python of its own for the stages drawn beside the sort: started once, reused for each.

The input check and drift pictures and the QC report run beside stages of the Snakemake process
(whitening, detect, the Phy export). Run inside that process they would hold its interpreter
lock, which the stages beside them need to drive the GPU or to write the export; run in a Python
started for the job they pay that start and its imports (about 1.5 s) each time. A side worker
is started by the first such job and kept: it runs the job files handed to it one after the
other (:func:`kilosnake.workflow.stages.run_stage`, the same log file, the same result), so the
later ones, the report among them, start at once. A job that arrives while every worker is busy
starts one more.

The worker ends when the Snakemake process closes its request pipe (at the end of the run, or
when the process dies, the kernel closes it), and within :data:`WATCH_S` when the Snakemake
process is gone while a stage runs (killed with ``kill -9``): the stage's store, written under a
temporary name, is then never renamed into place.

Protocol: one line per job on the request pipe (a JSON list: the caller's working directory
and the path of a ``StageJob`` JSON file), one line back on the reply pipe (the stage's exit
status: 0 done, 1 failed, see the stage's log). The worker runs each job in the folder the caller
is in when it hands the job over (a Python program may sort several recordings, each in its own
folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback

#: seconds between two looks, in the worker, at whether the Snakemake process is still there
WATCH_S = 0.5


class SideWorkerLost(RuntimeError):
    """The worker process ended before it answered."""


class SideWorker:
    """One worker process and the two pipes to it."""

    def __init__(self):
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(request_read), str(reply_write)],
            pass_fds=(request_read, reply_write),
        )
        os.close(request_read)
        os.close(reply_write)
        self.requests = os.fdopen(request_write, "w", buffering=1)
        self.replies = os.fdopen(reply_read, "r")

    def run(self, job_file) -> int:
        """Run the job of ``job_file`` in the worker; its exit status."""
        try:
            self.requests.write(json.dumps([os.getcwd(), os.fspath(job_file)]) + "\n")
            self.requests.flush()
            reply = self.replies.readline()
        except OSError:
            reply = ""
        if not reply:
            raise SideWorkerLost(
                f"the side worker (pid {self.process.pid}) ended with status "
                f"{self.process.wait()} while running {job_file}: see its stage's log; rerun "
                "the workflow to run the stage again, or set side_pictures_in_process=true"
            )
        return int(reply)

    def close(self) -> None:
        """End the worker: an idle one exits when its request pipe closes."""
        for pipe in (self.requests, self.replies):
            try:
                pipe.close()
            except OSError:
                pass


_idle: list[SideWorker] = []
_started: list[SideWorker] = []
_lock = threading.Lock()


def run_in_side_worker(job_file) -> int:
    """Run a stage job file in an idle side worker (one is started when none is idle); the
    stage's exit status."""
    with _lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = SideWorker()
        with _lock:
            _started.append(worker)
    try:
        status = worker.run(job_file)
    except SideWorkerLost:
        worker.close()
        raise
    with _lock:
        _idle.append(worker)
    return status


def close_side_workers() -> int:
    """Close every side worker this process started; how many there were."""
    with _lock:
        workers = list(_started)
        _started.clear()
        _idle.clear()
    for worker in workers:
        worker.close()
    return len(workers)


# --------------------------------------------------------------------------------------------
# the worker process


def watch_parent(parent: int) -> None:
    """End this process at once when the process that started it is gone."""
    while True:
        time.sleep(WATCH_S)
        if os.getppid() != parent:
            os._exit(1)


def run_job_file(folder: str, job_file: str) -> int:
    """Run one stage job in ``folder``; 0 when it is done, 1 when it failed (its log says
    why)."""
    from kilosnake.workflow.stages import main

    try:
        os.chdir(folder)
        return main([job_file])  # what scripts/run_stage.py runs
    except SystemExit as stop:  # an expected error, logged with its fix
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # logged by the stage already; the worker serves the next job
        traceback.print_exc()
        return 1


def serve(request_fd: int, reply_fd: int) -> None:
    """The worker's loop: run each job file read from ``request_fd`` until it closes."""
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    import kilosnake.workflow.stages  # noqa: F401  (every stage's code, imported once)

    with os.fdopen(request_fd, "r") as requests, os.fdopen(reply_fd, "w", buffering=1) as replies:
        for line in requests:
            folder, job_file = json.loads(line)
            replies.write(f"{run_job_file(folder, job_file)}\n")
            replies.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
