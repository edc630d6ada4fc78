"""Work started beside the first stage of a run, so that the steps after it find it done."""

from __future__ import annotations

import importlib
import threading

#: imported by Snakemake itself once the first job is done (to fingerprint the job's
#: parameters), on its scheduling thread: 0.3 s before the next job can start
SCHEDULER_IMPORTS = ("pandas",)


def import_ahead(*modules: str) -> threading.Thread:
    """Import ``modules`` on a thread of their own, now; a failed import is left to whoever
    imports the module next (and then fails the same way)."""

    def load():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                pass

    thread = threading.Thread(target=load, name="import-ahead", daemon=True)
    thread.start()
    return thread


def start_ahead(gpu: bool) -> None:
    """Beside the input check: Snakemake's own late imports and, for a GPU run, CuPy and the
    CUDA context (:func:`kilosnake.runtime.backend.start_gpu_ahead`)."""
    import_ahead(*SCHEDULER_IMPORTS)
    if gpu:
        from kilosnake.runtime.backend import start_gpu_ahead

        start_gpu_ahead()
