"""Threads shared by a process: pools, one per name, made when first asked for; and kept
threads (:func:`on_kept_thread`), which never end."""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable

_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_lock = threading.Lock()


def shared_thread_pool(name: str, threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool called ``name`` (its threads are named after it), made with
    ``threads`` threads the first time and reused by every later caller."""
    with _lock:
        if name not in _pools:
            _pools[name] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        return _pools[name]


# --------------------------------------------------------------------------------------------
# kept threads: for the GPU stages of a run inside one process


class _KeptThread:
    """A daemon thread running the calls handed to it one after the other; it never ends."""

    def __init__(self, name: str):
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, args, future = self.calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, as concurrent.futures does
                result, error = None, exc
            self._idle()  # idle before the caller hears: it may hand over the next call
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _idle(self) -> None:
        with _lock:
            _idle_kept.append(self)


_idle_kept: list[_KeptThread] = []
_kept_made = itertools.count()


def on_kept_thread(fn: Callable, *args) -> concurrent.futures.Future:
    """Call ``fn(*args)`` on an idle kept thread of this process (one more is started when none
    is idle); its future.

    A kept thread never ends, so what a library keeps per thread lives as long as the process.
    CuPy keeps its cuBLAS, cuSOLVER and cuFFT handles and plans per thread. GPU stages run on
    the threads of Snakemake's job pool made them again on each new thread, and the end of a
    run waited while the pool's threads ended and their finalizers ran (0.25 s of a 10 s,
    384-channel sort on an H100 machine; the run's end after its last stage took 0.34-0.46 s
    before and 0.16-0.20 s with the GPU stages on kept threads).
    """
    with _lock:
        worker = _idle_kept.pop() if _idle_kept else None
    if worker is None:
        worker = _KeptThread(f"kept-{next(_kept_made)}")
    future: concurrent.futures.Future = concurrent.futures.Future()
    worker.calls.put((fn, args, future))
    return future
