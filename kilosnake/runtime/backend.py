"""The array backend: NumPy/SciPy on the CPU or CuPy/cupyx.scipy on a GPU, chosen once.

Stage functions take a :class:`Backend` explicitly and never pick a GPU by themselves::

    be = get_backend("auto")      # logs which one it chose
    x = be.xp.asarray(batch)      # numpy or cupy
    y = be.signal.sosfilt(sos, x, axis=0)
    host = be.to_host(y)

Where the sorting code has a CUDA kernel for a step, :attr:`Backend.use_kernels` chooses it
(true on a GPU); :meth:`Backend.array_code` gives the same backend with the kernels switched off,
so every step runs as the array code that is the reference (and the CPU path). The tests compare
the two on a GPU.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from types import ModuleType

import numpy as np

from kilosnake.errors import DeviceError
from kilosnake.runtime.gpus import claim_gpu
from kilosnake.runtime.threads import on_kept_thread

logger = logging.getLogger(__name__)


DEVICES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class Backend:
    """Array modules for one device."""

    name: str  # "cpu" or "gpu"
    xp: ModuleType  # numpy or cupy
    signal: ModuleType  # scipy.signal or cupyx.scipy.signal
    ndimage: ModuleType  # scipy.ndimage or cupyx.scipy.ndimage
    device_label: str
    #: run the CUDA kernels where the sorting code has them (only a GPU backend has them);
    #: False: the array code, on the same module
    use_kernels: bool = False

    def array_code(self) -> Backend:
        """This backend with the CUDA kernels switched off: every step runs as array code."""
        return dataclasses.replace(self, use_kernels=False)

    def asarray(self, array, dtype=None):
        """Move (or view) an array onto this backend's device."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of an array of this backend."""
        if self.name == "gpu":
            return self.xp.asnumpy(array)
        return np.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued GPU work (no-op on the CPU)."""
        if self.name == "gpu":
            self.xp.cuda.Stream.null.synchronize()


def cpu_backend() -> Backend:
    """The NumPy/SciPy backend."""
    import scipy.ndimage
    import scipy.signal

    return Backend("cpu", np, scipy.signal, scipy.ndimage, "cpu (NumPy)")


def _gpu_backend_or_reason() -> tuple[Backend | None, str]:
    try:
        import cupy
        import cupyx.scipy.ndimage
        import cupyx.scipy.signal
    except Exception as exc:  # ImportError, or CUDA libraries missing at import
        return None, f"CuPy is not importable ({exc.__class__.__name__}: {exc})"

    claim_gpu()  # several GPUs and none assigned: take a free one before CUDA starts
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy sees no CUDA device ({exc.__class__.__name__}: {exc})"
    if n == 0:
        return None, "CuPy sees no CUDA device"
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    try:
        bus = f", PCI {dev.pci_bus_id}"
    except Exception:  # not every driver/runtime answers
        bus = ""
    label = (
        f"gpu {dev.id} of {n} visible ({name}{bus}, {visible_gpus_text()}, CuPy {cupy.__version__})"
    )
    return Backend("gpu", cupy, cupyx.scipy.signal, cupyx.scipy.ndimage, label, True), ""


def visible_gpus_text() -> str:
    """Which physical GPUs this process may use, as the environment says.

    CuPy (like every CUDA program) numbers only the GPUs listed in ``CUDA_VISIBLE_DEVICES`` and
    uses the first of them, so a SLURM job that got GPU 3 (``--gpus=1``; SLURM sets
    ``CUDA_VISIBLE_DEVICES=3``) computes on GPU 3, which CuPy calls device 0. Without the
    variable a job on a machine with several GPUs takes a free one itself
    (:func:`kilosnake.runtime.gpus.claim_gpu`) and sets the variable.
    """
    import os

    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return "CUDA_VISIBLE_DEVICES unset: all GPUs visible"
    return f"CUDA_VISIBLE_DEVICES={value}"


def start_gpu_ahead() -> concurrent.futures.Future:
    """Import CuPy and create the GPU's CUDA context on a kept thread
    (:func:`kilosnake.runtime.threads.on_kept_thread`), now.

    Both take about half a second, which the first GPU stage of a run would otherwise wait for;
    started beside the input check, they are ready when the whitening begins. Nothing is
    reported: the stage that uses the GPU chooses its backend (and says why it cannot) itself.
    """

    def warm_up():
        try:
            backend, _ = _gpu_backend_or_reason()
            if backend is not None:
                backend.xp.zeros(1).sum()  # the context, and CuPy's first kernel
        except Exception:  # no GPU, or no CUDA: the GPU stage will say so
            pass

    return on_kept_thread(warm_up)


def get_backend(device: str = "cpu") -> Backend:
    """Choose the backend for ``device`` (``cpu``, ``gpu`` or ``auto``) and log the choice.

    ``gpu`` without a usable GPU raises :class:`DeviceError`; ``auto`` falls back to the CPU
    and says why in the log.
    """
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        backend = cpu_backend()
    else:
        backend, reason = _gpu_backend_or_reason()
        if backend is None and device == "gpu":
            raise DeviceError(
                f"device=gpu was asked for but {reason}.\n  fix: install the GPU extra "
                "(pip install -e '.[gpu]') on a machine with an NVIDIA GPU, or run with "
                "--config device=cpu"
            )
        if backend is None:
            logger.info("device=auto: using the CPU because %s", reason)
            backend = cpu_backend()
        elif device == "auto":
            logger.info("device=auto: a GPU is available, using it")
    logger.info("backend: %s", backend.device_label)
    if backend.name == "cpu":
        import os

        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # e.g. a SLURM GPU job on the CPU
            logger.info("GPUs given to this job (not used): %s", visible_gpus_text())
    return backend


def array_module(array) -> ModuleType:
    """numpy or cupy, whichever owns ``array``."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np
