"""Progress of long loops: a log line at a steady rhythm, a bar on a terminal.

Long stages (preprocessing, drift detection, template learning, the final pass) loop over
batches. :class:`Progress` turns that loop into log lines such as::

    learn: batch 120/1850 (6%), 2.41 batch/s, elapsed 50 s, ETA 12 min 0 s; 212 templates

one on the first step (so the log shows the loop started and its first rate), then every
``every_s`` seconds (10 s by default) or every ``every_n`` steps, and one on the last step.
When stderr is a terminal a tqdm bar is drawn as well, and kilosnake's console log lines are
written through tqdm so they do not break the bar; log files never see the bar.

Usage::

    with Progress(nb, "preprocess") as progress:
        for b in range(nb):
            ...
            progress.update(spikes=total)

Each logged line also samples the CuPy memory pool, so the closing line of
:func:`kilosnake.runtime.logs.stage_logging` can report the peak GPU memory of the stage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time

from kilosnake.runtime.logs import sample_gpu_memory

logger = logging.getLogger(__name__)


#: seconds between two progress lines
DEFAULT_EVERY_S = 10.0


def format_duration(seconds: float) -> str:
    """A short human duration: ``"42 s"``, ``"3 min 5 s"``, ``"2 h 04 min"``, ``"?"``.

    Parameters
    ----------
    seconds : float

    Returns
    -------
    str
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_rate(steps: int, elapsed: float, unit: str) -> str:
    """``"2.41 batch/s"``, or ``"12.3 s/batch"`` for slow loops."""
    if elapsed <= 0 or steps <= 0:
        return f"? {unit}/s"
    rate = steps / elapsed
    if rate >= 1.0:
        return f"{rate:.2f} {unit}/s"
    return f"{1.0 / rate:.1f} s/{unit}"


def eta_seconds(done: int, total: int, elapsed: float) -> float:
    """Remaining time at the mean rate so far (``nan`` before the first step)."""
    if done <= 0:
        return float("nan")
    return (total - done) * elapsed / done


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (the only place a bar is drawn)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Log the progress of a loop of ``total`` steps at a steady rhythm.

    Parameters
    ----------
    total : int
        Number of steps of the loop.
    label : str
        What the loop does; starts every line (``"learn"``, ``"drift detection"``).
    log : logging.Logger, optional
        Where the lines go (this module's logger by default; stages pass their own).
    every_s : float
        Seconds between two lines.
    every_n : int, optional
        Also log every ``every_n`` steps.
    unit : str
        Name of one step.
    bar : bool, optional
        Draw a tqdm bar; by default only when stderr is a terminal.
    clock : callable
        Monotonic time source (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        label: str,
        log: logging.Logger | None = None,
        every_s: float = DEFAULT_EVERY_S,
        every_n: int | None = None,
        unit: str = "batch",
        bar: bool | None = None,
        clock=time.perf_counter,
    ):
        self.total = max(int(total), 0)
        self.label = label
        self.log = log or logger
        self.every_s = float(every_s)
        self.every_n = int(every_n) if every_n else None
        self.unit = unit
        self.clock = clock
        self.done = 0
        self.lines = 0
        self.t0 = self.clock()
        self._last = self.t0
        self._bar = None
        self._redirect = None
        if bar if bar is not None else stderr_is_terminal():
            self._open_bar()

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop ------------------------------------------------------------------------

    def update(self, n: int = 1, **extra) -> None:
        """Count ``n`` more steps; log a line when it is time.

        Parameters
        ----------
        n : int
            Steps just finished.
        **extra
            Running totals shown after the rate, e.g. ``spikes=1234`` → ``"1234 spikes"``.
        """
        self.done += int(n)
        now = self.clock()
        if self._bar is not None:
            self._bar.update(int(n))
        if self._due(now):
            self._last = now
            self.lines += 1
            self.log.info("%s", self.message(now, extra))
            _sample_gpu_memory()

    def _due(self, now: float) -> bool:
        if self.done == 1 or self.done >= self.total:
            return True
        if self.every_n and self.done % self.every_n == 0:
            return True
        return now - self._last >= self.every_s

    def message(self, now: float | None = None, extra: dict | None = None) -> str:
        """The progress line for the current state."""
        now = self.clock() if now is None else now
        elapsed = now - self.t0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (
            f"{self.label}: {self.unit} {self.done}/{self.total} ({pct:.0f}%), "
            f"{format_rate(self.done, elapsed, self.unit)}, "
            f"elapsed {format_duration(elapsed)}, "
            f"ETA {format_duration(eta_seconds(self.done, self.total, elapsed))}"
        )
        if extra:
            text += "; " + ", ".join(_extra_text(k, v) for k, v in extra.items())
        return text

    def close(self) -> None:
        """Close the bar (log lines need no closing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None

    # -- the terminal bar ----------------------------------------------------------------

    def _open_bar(self) -> None:
        try:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm
        except ImportError:  # the bar is a nicety; the log lines are what matters
            return
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(
            logging_redirect_tqdm(loggers=[logging.getLogger("kilosnake")])
        )
        self._bar = tqdm(
            total=self.total,
            desc=self.label,
            unit=self.unit,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )


def _extra_text(key: str, value) -> str:
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{value} {key.replace('_', ' ')}"


def _sample_gpu_memory() -> None:

    sample_gpu_memory()
