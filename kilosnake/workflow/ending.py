"""The end of a workflow run: nothing left waiting that would keep the process from exiting."""

from __future__ import annotations

import threading

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
