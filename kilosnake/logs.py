"""Logging for stages: a log file per rule, first and last lines with the facts that matter.

Every rule script wraps its one library call in :func:`stage_logging`::

    with stage_logging(snakemake.log[0], "preprocess", params):
        preprocess_recording(...)

The first lines give the version, the stage and the non-default parameters; the last ones the
wall time and peak host memory (and GPU memory when CuPy was used). An expected error
(:class:`~kilosnake.errors.KilosnakeError`) is logged as its message, without a traceback, and the
process exits with status 1.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time

from . import __version__
from .errors import KilosnakeError
from .params import log_non_default

logger = logging.getLogger("kilosnake")

THIRD_PARTY_LOGGERS = ("numcodecs", "zarr", "matplotlib", "asyncio", "phylib", "urllib3")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_default_handler(level="INFO", path=None) -> logging.Handler:
    """Send kilosnake's log to stderr (or to ``path``) at ``level``; quieten third parties."""
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_gpu_memory_mb() -> float | None:
    """Bytes held by CuPy's memory pool (MB), or None when CuPy was not used."""
    if "cupy" not in sys.modules:
        return None
    pool = sys.modules["cupy"].get_default_memory_pool()
    return pool.total_bytes() / 1e6


@contextlib.contextmanager
def stage_logging(log_path, stage: str, params: dict | None = None, exit_on_error: bool = True):
    """Log a stage to ``log_path`` (and stderr), with its opening and closing facts."""
    handlers = [add_default_handler("INFO", log_path)] if log_path else []
    handlers.append(add_default_handler("INFO"))
    params = params or {}
    log_non_default(params, logger)
    logger.info("kilosnake %s, stage %s, Python %s", __version__, stage, sys.version.split()[0])
    t0 = time.perf_counter()
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
        gpu = peak_gpu_memory_mb()
        gpu_text = "" if gpu is None else f", GPU pool {gpu:.0f} MB"
        logger.info("%s done in %.1f s, peak host memory %.0f MB%s", stage,
                    time.perf_counter() - t0, peak_host_memory_mb(), gpu_text)
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
