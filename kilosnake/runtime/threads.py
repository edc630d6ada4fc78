"""Thread pools shared by a process: one per name, made when first asked for."""

from __future__ import annotations

import concurrent.futures
import threading

_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_lock = threading.Lock()


def shared_thread_pool(name: str, threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool called ``name`` (its threads are named after it), made with
    ``threads`` threads the first time and reused by every later caller."""
    with _lock:
        if name not in _pools:
            _pools[name] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name)
        return _pools[name]
