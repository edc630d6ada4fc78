"""A finished run leaves no scheduler timer that would hold the process open."""

import threading

from kilosnake.workflow.ending import cancel_rescheduling_timers


class _Scheduler:
    """Stands in for Snakemake's scheduler: the same method name makes the same timers."""

    def __init__(self):
        self.fired = threading.Event()

    def _schedule_reevalutation(self, delay: float) -> threading.Timer:
        timer = threading.Timer(delay, lambda: self.fired.set())
        timer.start()
        return timer


def test_the_schedulers_pending_timers_are_cancelled_and_others_left_alone():
    scheduler = _Scheduler()
    pending = scheduler._schedule_reevalutation(30.0)
    other_fired = threading.Event()
    other = threading.Timer(0.2, other_fired.set)
    other.start()
    assert cancel_rescheduling_timers() == 1
    pending.join(timeout=5)
    assert not pending.is_alive() and not scheduler.fired.is_set()
    assert other_fired.wait(timeout=5)  # a timer of anything else still fires


def test_nothing_to_cancel_when_no_timer_is_pending():
    assert cancel_rescheduling_timers() == 0
