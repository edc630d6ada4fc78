"""A finished run leaves no scheduler timer that would hold the process open, and the
``snakemake`` command ends without tearing its interpreter down, its output flushed."""

import subprocess
import sys
import threading

from kilosnake.workflow.ending import cancel_rescheduling_timers, exit_without_teardown


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


#: a process that calls itself snakemake, arranges the quick exit, then writes without flushing
QUICK_EXIT = """
import atexit, logging, sys
sys.argv[0] = sys.argv[1]
atexit.register(print, "teardown ran")  # registered first: skipped when the quick exit is on
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
from kilosnake.workflow.ending import exit_without_teardown
print("arranged" if exit_without_teardown() else "not arranged")
logging.getLogger("x").info("logged")
sys.stdout.write("unflushed")
"""


def run_as(argv0):
    return subprocess.run(
        [sys.executable, "-c", QUICK_EXIT, argv0], capture_output=True, text=True, timeout=60
    )


def test_the_snakemake_command_exits_with_its_output_flushed_and_no_teardown():
    for argv0 in ("/venv/bin/snakemake", "/site-packages/snakemake/__main__.py"):
        done = run_as(argv0)
        assert done.returncode == 0
        assert done.stdout == "arranged\nunflushed" and "logged" in done.stderr


def test_a_program_driving_the_workflow_keeps_its_own_exit():
    assert not exit_without_teardown()  # pytest is not the snakemake command
    done = run_as("/home/lab/sort_all.py")
    assert done.returncode == 0 and done.stdout == "not arranged\nunflushedteardown ran\n"
