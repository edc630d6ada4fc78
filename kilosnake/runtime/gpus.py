"""One GPU per job when several GPU jobs run side by side on one machine.

SLURM gives every GPU job its own GPU by setting ``CUDA_VISIBLE_DEVICES``; CuPy then sees only
that GPU. A local run (``snakemake --cores N --resources gpu=G``) sets nothing, so every job would
compute on GPU 0. :func:`claim_gpu` fills the gap: when ``CUDA_VISIBLE_DEVICES`` is unset and more
than one GPU is present, the job takes the first free GPU *slot* — an exclusive ``fcntl`` lock on
``<lock dir>/gpu<i>.lock``, held until the process ends (the kernel drops it even when the job is
killed) — and sets ``CUDA_VISIBLE_DEVICES=<i>`` before CUDA starts, so that CuPy (every thread of
it) computes on GPU ``i`` only. With all slots taken the job waits for one; together with
``--resources gpu=G`` (``G`` at most the number of GPUs) it never waits.

The lock directory is ``.snakemake/gpu-slots`` under the working directory (one Snakemake run);
set ``KILOSNAKE_GPU_LOCK_DIR`` to one shared folder for runs that share a machine's GPUs.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)


#: where the slot locks live unless KILOSNAKE_GPU_LOCK_DIR says otherwise (relative to the
#: working directory, which Snakemake sets to the run's folder)
DEFAULT_LOCK_DIR = Path(".snakemake") / "gpu-slots"
#: seconds between two looks for a free slot while all are taken
POLL_S = 1.0

_claimed: dict = {}  # the slot this process holds: {"index", "fd", "path"}


def lock_dir() -> Path:
    """The folder of the slot locks."""
    return Path(os.environ.get("KILOSNAKE_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)


@functools.lru_cache(maxsize=1)
def gpu_count() -> int:
    """GPUs on this machine, counted without starting CUDA (``nvidia-smi -L``, else the driver's
    ``/proc`` entries); 0 when there is no NVIDIA driver. Counted once per process: each GPU
    stage asks, and ``nvidia-smi`` takes 20-40 ms."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    proc = Path("/proc/driver/nvidia/gpus")
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def try_slot(folder: Path, index: int):
    """An open file holding the exclusive lock of slot ``index``, or None when it is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire_slot(
    n_gpus: int, folder: Path, timeout_s: float | None = None, poll_s: float = POLL_S
) -> tuple[int, int]:
    """Take the first free slot of ``n_gpus``, waiting while all are taken.

    Parameters
    ----------
    n_gpus : int
        Slots to choose from (GPU indices 0 .. n_gpus - 1).
    folder : Path
        Where the lock files are.
    timeout_s : float, optional
        Give up after this long (``TimeoutError``); wait forever when None.
    poll_s : float
        Seconds between two tries while every slot is taken.

    Returns
    -------
    (index, fd)
        The slot and the open lock file; the slot is free again when ``fd`` is closed or the
        process ends.
    """
    start, warned = time.monotonic(), False
    while True:
        for index in range(n_gpus):
            fd = try_slot(folder, index)
            if fd is not None:
                return index, fd
        if not warned:
            logger.info(
                "all %d GPUs are taken by other jobs (locks in %s); waiting for one "
                "(run with --resources gpu=%d to keep jobs from waiting here)",
                n_gpus,
                folder,
                n_gpus,
            )
            warned = True
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no free GPU slot in {folder} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def release_slot() -> None:
    """Give back the slot this process holds (it is also released when the process ends)."""
    fd = _claimed.pop("fd", None)
    if fd is not None:
        os.close(fd)
    _claimed.clear()


def claim_gpu(n_gpus: int | None = None, folder: Path | None = None) -> int | None:
    """Pin this process to one GPU when several are present and none was assigned.

    Does nothing when ``CUDA_VISIBLE_DEVICES`` is set (SLURM, or the user chose) or when at most
    one GPU is present. Otherwise takes a free slot (:func:`acquire_slot`), sets
    ``CUDA_VISIBLE_DEVICES`` to it and logs the choice. Call it before CUDA is first used in the
    process; calling it again returns the slot already held.

    Parameters
    ----------
    n_gpus : int, optional
        GPUs present; counted with :func:`gpu_count` when not given.
    folder : Path, optional
        The lock folder; :func:`lock_dir` when not given.

    Returns
    -------
    int or None
        The GPU index taken, or None when nothing was done.
    """
    if "index" in _claimed:
        return _claimed["index"]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    n_gpus = gpu_count() if n_gpus is None else int(n_gpus)
    if n_gpus <= 1:
        return None
    folder = lock_dir() if folder is None else Path(folder)
    index, fd = acquire_slot(n_gpus, folder)
    _claimed.update(index=index, fd=fd, path=str(folder / f"gpu{index}.lock"))
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    logger.info(
        "GPU %d of %d taken for this job (slot lock %s); CUDA_VISIBLE_DEVICES=%d",
        index,
        n_gpus,
        _claimed["path"],
        index,
    )
    return index
