"""Logging for stages: a log file per rule, first and last lines with the facts that matter.

Every rule script wraps its one library call in :func:`stage_logging`::

    with stage_logging(snakemake.log[0], "preprocess", params):
        preprocess_recording(...)

The first lines give the non-default parameters, the version, the stage, the host and the
device asked for, then one line per input given (what it holds: the largest array of a Zarr
store and its shape, the samples × channels of ``input.json``, the size of a file). The backend
actually used is logged by :func:`kilosnake.runtime.backend.get_backend` when the stage chooses it.
The last line gives the wall time, CPU time, peak host memory and, when CuPy was used, the peak
size of CuPy's memory pool (sampled at every progress line, :mod:`kilosnake.runtime.progress`,
and at the end). An expected error (:class:`~kilosnake.errors.KilosnakeError`) is logged as its
message, without a traceback, and the process exits with status 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import resource
import sys
import threading
import time
import warnings
from pathlib import Path

from kilosnake.errors import KilosnakeError
from kilosnake.params import log_non_default
from kilosnake.runtime.backend import get_backend
from kilosnake.runtime.gpu_memory import apply_cap
from kilosnake.version import __version__

logger = logging.getLogger("kilosnake")


THIRD_PARTY_LOGGERS = (
    "numcodecs",
    "zarr",
    "matplotlib",
    "asyncio",
    "phylib",
    "urllib3",
    "PIL",
    "numba",
    "fsspec",
    "h5py",
    "filelock",
    "cupy",
    "fontTools",
)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: ``extra=`` of the records a stage also shows on the console when it has a log file: the one
#: line when it starts and the one when it is done (warnings and errors always show)
CONSOLE = {"console": True}

_gpu_peak_bytes = 0


def add_default_handler(level="INFO", path=None) -> logging.Handler:
    """Send kilosnake's log to stderr (or to ``path``) at ``level``; quieten third parties."""
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


class ConsoleFilter(logging.Filter):
    """Let warnings, errors and the records marked :data:`CONSOLE` through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "console", False)


def add_console_handler() -> logging.Handler:
    """The console of a stage that logs to a file: its start, its end, warnings and errors
    (the details are in the file)."""
    handler = add_default_handler("INFO")
    handler.addFilter(ConsoleFilter())
    return handler


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_time_s() -> float:
    """User + system CPU time of this process so far (s)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sample_gpu_memory() -> None:
    """Remember the size of CuPy's memory pool if it is the largest seen (no-op without CuPy)."""
    global _gpu_peak_bytes
    if "cupy" not in sys.modules:
        return
    try:
        total = sys.modules["cupy"].get_default_memory_pool().total_bytes()
    except Exception:  # CuPy imported but unusable (no driver): nothing to sample
        return
    _gpu_peak_bytes = max(_gpu_peak_bytes, int(total))


def peak_gpu_memory_mb() -> float | None:
    """Peak bytes held by CuPy's memory pool (MB), or None when CuPy was not used."""
    if "cupy" not in sys.modules:
        return None
    sample_gpu_memory()
    return _gpu_peak_bytes / 1e6


def _reset_gpu_peak() -> None:
    global _gpu_peak_bytes
    _gpu_peak_bytes = 0


# --------------------------------------------------------------------------------------------
# what the inputs hold


def describe_input(path) -> str:
    """One line on what ``path`` holds (never raises).

    Parameters
    ----------
    path : str or Path
        A Zarr store, ``input.json``, a raw file or a folder.

    Returns
    -------
    str
        e.g. ``"preprocessed.zarr: traces (900000, 32) int16"``,
        ``"input.json: 900000 samples (30.0 s) x 32 channels"``, ``"demo.bin: 57.6 MB"``.
    """
    p = Path(path)
    try:
        if p.suffix == ".zarr" and p.is_dir():
            return f"{p.name}: {_describe_zarr(p)}"
        if p.suffix == ".json" and p.is_file():
            return f"{p.name}: {_describe_json(p)}"
        if p.is_dir():
            return f"{p.name}/: {sum(1 for _ in p.iterdir())} entries"
        if p.is_file():
            return f"{p.name}: {format_size(p.stat().st_size)}"
        return f"{p.name}: missing"
    except Exception as exc:  # a description must never stop a stage
        return f"{p.name}: not described ({exc.__class__.__name__})"


def format_size(n_bytes: int) -> str:
    """``"512 B"``, ``"1.5 kB"``, ``"57.6 MB"``, ``"1.20 GB"``."""
    if n_bytes < 1e3:
        return f"{n_bytes} B"
    if n_bytes < 1e6:
        return f"{n_bytes / 1e3:.1f} kB"
    if n_bytes < 1e9:
        return f"{n_bytes / 1e6:.1f} MB"
    return f"{n_bytes / 1e9:.2f} GB"


#: Snakemake keeps the time of a directory output in a file inside it, which Zarr warns about
#: whenever it lists the store's members
_SNAKEMAKE_TIMESTAMP_WARNING = r"Object at \.snakemake_timestamp is not recognized"


#: ... and the entry of ``warnings.filters`` that silences it
_SNAKEMAKE_TIMESTAMP_FILTER = (
    "ignore", re.compile(_SNAKEMAKE_TIMESTAMP_WARNING, re.I), Warning, None, 0
)  # fmt: skip


def ignore_snakemake_timestamps() -> None:
    """Silence Zarr's warning about Snakemake's timestamp file inside a store.

    A filter added for good, once (changing the filters would let other warnings already shown
    once show again), not ``warnings.catch_warnings``: that swaps the process-wide filters in
    and out and is not thread-safe, and stages run side by side as threads of one process.
    """
    if _SNAKEMAKE_TIMESTAMP_FILTER not in warnings.filters:
        warnings.filterwarnings("ignore", message=_SNAKEMAKE_TIMESTAMP_WARNING)


def _describe_zarr(path: Path) -> str:
    import zarr

    ignore_snakemake_timestamps()
    g = zarr.open_group(str(path), mode="r")
    arrays = [(name, a) for name, a in g.arrays()]
    n_groups = 0 if arrays else len(list(g.group_keys()))
    if not arrays:
        return f"{n_groups} groups"
    name, a = max(arrays, key=lambda kv: kv[1].nbytes)
    return f"{name} {tuple(a.shape)} {a.dtype}, {len(arrays)} arrays"


def _describe_json(path: Path) -> str:
    d = json.loads(path.read_text())
    if isinstance(d, dict) and "n_samples" in d:
        n_probe = len(d.get("probe", {}).get("chan_map", []))
        return (
            f"{d['n_samples']} samples ({d.get('duration_s', float('nan')):.1f} s) x "
            f"{d.get('n_channels_total')} channels ({n_probe} on the probe)"
        )
    return f"{path.stat().st_size} bytes"


def log_opening(stage: str, params: dict, inputs) -> None:
    """The first lines of a stage's log (see the module docstring)."""
    log_non_default(params, logger)
    device = params.get("device")
    logger.info(
        "kilosnake %s, stage %s, Python %s, host %s, pid %d%s",
        __version__,
        stage,
        sys.version.split()[0],
        platform.node() or "?",
        os.getpid(),
        "" if device is None else f", device asked: {device}",
    )
    for path in inputs:
        logger.info("input %s", describe_input(path))


def log_closing(stage: str, wall_s: float, cpu_s: float) -> None:
    """The last line of a successful stage."""
    gpu = peak_gpu_memory_mb()
    gpu_text = "" if gpu is None else f", peak GPU pool {gpu:.0f} MB"
    logger.info(
        "%s done in %.1f s (CPU %.1f s), peak host memory %.0f MB%s",
        stage,
        wall_s,
        cpu_s,
        peak_host_memory_mb(),
        gpu_text,
        extra=CONSOLE,
    )


#: threads running a stage now (several stages may run side by side in one process)
_stage_threads: set[int] = set()


class StageThreadFilter(logging.Filter):
    """Keep the records of the stage started on this thread, for that stage's handlers.

    Stages run as threads of one process share the ``kilosnake`` logger: each stage's log file
    receives the records of its own thread, and those of threads that run no stage (the
    read-ahead and write-behind helpers a stage starts).
    """

    def __init__(self):
        super().__init__()
        self.ident = threading.get_ident()
        _stage_threads.add(self.ident)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident or record.thread not in _stage_threads

    def close(self) -> None:
        _stage_threads.discard(self.ident)


@contextlib.contextmanager
def stage_logging(
    log_path, stage: str, params: dict | None = None, exit_on_error: bool = True, inputs=None
):
    """Log a stage to ``log_path``, with its opening and closing facts; the console (stderr)
    shows one line when it starts, one when it is done, warnings and errors (everything when
    there is no log file).

    Parameters
    ----------
    log_path : str or Path or None
        Log file (stderr only when None).
    stage : str
        Name of the stage.
    params : dict, optional
        Resolved parameters; the non-default ones are logged.
    exit_on_error : bool
        Turn an expected error into exit status 1 instead of re-raising it.
    inputs : iterable of paths, optional
        Inputs to describe (a rule script passes its rule's inputs).
    """
    this_stage = StageThreadFilter()
    handlers = [add_default_handler("INFO", log_path), add_console_handler()] if log_path else []
    handlers = handlers or [add_default_handler("INFO")]
    for h in handlers:
        h.addFilter(this_stage)
    params = params or {}
    log_opening(stage, params, [] if inputs is None else list(dict.fromkeys(map(str, inputs))))
    if log_path:
        logger.info("%s started (log: %s)", stage, log_path, extra=CONSOLE)
    _reset_gpu_peak()
    if params.get("gpu_memory_gb") and params["device"] != "cpu":
        if get_backend(params["device"]).name == "gpu":  # imports CuPy, which the cap is for
            apply_cap(params["gpu_memory_gb"])
    t0, c0 = time.perf_counter(), cpu_time_s()
    try:
        yield logger
    except KilosnakeError as exc:
        logger.error("%s failed: %s", stage, exc)
        if exit_on_error:
            raise SystemExit(1) from None
        raise
    except Exception:
        logger.exception("%s failed with an unexpected error", stage)
        raise
    else:
        log_closing(stage, time.perf_counter() - t0, cpu_time_s() - c0)
    finally:
        this_stage.close()
        for h in handlers:
            logger.removeHandler(h)
            h.close()
