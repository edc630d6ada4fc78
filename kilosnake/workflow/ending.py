"""The end of a workflow run: nothing left waiting that would keep the process from exiting."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path

#: Snakemake's scheduler re-evaluates after its job rate limiter's timespan through a timer
#: made by this method
_RESCHEDULING = "_schedule_reevalutation"


def cancel_rescheduling_timers() -> int:
    """Cancel the scheduler's pending re-evaluation timers; return how many there were.

    After every scheduling round Snakemake starts a ``threading.Timer`` of its job rate
    limiter's timespan (one second by default). Timers are not daemon threads, so the
    interpreter of a finished run waited up to that second for the last one before it could
    exit. Once the workflow has ended there is nothing left to schedule.
    """
    timers = [
        t
        for t in threading.enumerate()
        if isinstance(t, threading.Timer)
        and _RESCHEDULING in getattr(getattr(t, "function", None), "__qualname__", "")
    ]
    for timer in timers:
        timer.cancel()
    return len(timers)


def end_of_run() -> None:
    """What the workflow does once it has ended, done or failed: no scheduler timer left
    waiting, the side workers told to exit."""
    from kilosnake.workflow.side_worker import close_side_workers

    cancel_rescheduling_timers()
    close_side_workers()


def is_snakemake_command() -> bool:
    """Whether this process is the ``snakemake`` command (``snakemake`` or ``python -m
    snakemake``), not a Python program driving the workflow through Snakemake's API."""
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return path.name == "snakemake" or path.parts[-2:] == ("snakemake", "__main__.py")


def exit_without_teardown() -> bool:
    """After a successful run of the ``snakemake`` command, end the process at its exit without
    tearing the interpreter down; True when arranged.

    Every output is written by then and Snakemake has released its locks; what is left is
    freeing every object and module one by one (0.5 s on a 2-core machine, more with a GPU's
    memory pool and context), which the operating system does at once. The log handlers and
    the standard streams are flushed first. Only for the command itself: a program that drives
    the workflow from Python keeps its own exit.
    """
    if not is_snakemake_command():
        return False

    def exit_now():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    atexit.register(exit_now)  # registered last, so run first
    return True
