"""Independent per-item work (units, clusters) spread over forked worker processes.

:func:`map_ordered` and :func:`imap_ordered` give ``func(item)`` for every item, in input order,
whatever the number of workers: with one worker (or fewer than two items) they are a plain map in
this process, otherwise the items go to a ``fork`` process pool. The workers run the same code on
the same inputs, so a stage's output does not depend on its number of workers.
:class:`WorkerPool` keeps one pool for several such maps (a loop that maps a batch at a time).

Large read-only data (arrays, open stores) is best handed over as ``inherited``: it reaches the
workers through the fork, never pickled, and ``func`` receives it as its first argument. Items
and results are pickled, so they should stay small (a cluster's spike indices, not its features).
``func`` must be a module-level function (pickled by reference).

While a pool of several workers is open, OpenBLAS (the BLAS of NumPy's wheels and conda-forge's
default) is limited to one thread, in this process and in the workers: a Snakemake job of
``threads: 8`` gets ``OPENBLAS_NUM_THREADS=8``, and eight workers with eight spinning BLAS
threads each would oversubscribe its cores many times over.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: data handed to the forked workers of each pool, by pool
_INHERITED: dict[int, Any] = {}
_POOL_KEYS = itertools.count()


def _call_with_inherited(func: Callable, key: int, item):
    return func(_INHERITED[key], item)


def _loaded_libraries(word: str) -> list[str]:
    """Shared libraries loaded in this process whose file name holds ``word`` (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            fields = [line.split(maxsplit=5) for line in f]
    except OSError:
        return []
    return sorted(
        {
            x[5].strip()
            for x in fields
            if len(x) == 6 and word in os.path.basename(x[5].strip()).lower()
        }
    )


def _thread_control(lib: ctypes.CDLL) -> tuple[Callable, Callable] | None:
    """``(get_num_threads, set_num_threads)`` of an OpenBLAS library, if it exports them."""
    for prefix in ("openblas", "scipy_openblas"):
        for suffix in ("", "64_"):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


#: (number of imported modules, controls) of the last scan of the loaded libraries
_CONTROLS_SCANNED: tuple[int, list] | None = None


def _openblas_thread_controls() -> list[tuple[Callable, Callable]]:
    """The thread controls of every OpenBLAS loaded in this process.

    The loaded libraries are scanned again only when modules were imported since the last scan
    (a library comes with the import of the module that needs it): a scan reads
    ``/proc/self/maps``, 5-20 ms, and the learn stage asks once per batch.
    """
    global _CONTROLS_SCANNED
    n_modules = len(sys.modules)
    if _CONTROLS_SCANNED is None or _CONTROLS_SCANNED[0] != n_modules:
        _CONTROLS_SCANNED = (n_modules, _scan_openblas_thread_controls())
    return _CONTROLS_SCANNED[1]


def _scan_openblas_thread_controls() -> list[tuple[Callable, Callable]]:
    controls = []
    for path in _loaded_libraries("openblas"):
        try:
            control = _thread_control(ctypes.CDLL(path))
        except OSError:
            continue
        if control is not None:
            controls.append(control)
    return controls


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit OpenBLAS to ``n`` threads inside the ``with`` block (and in processes forked there);
    nothing happens where no OpenBLAS is found."""
    controls = _openblas_thread_controls()
    before = [get() for get, _ in controls]
    for _, put in controls:
        put(n)
    try:
        yield
    finally:
        for (_, put), threads in zip(controls, before):
            put(threads)


#: one_blas_thread: blocks inside (all threads), and the limit they share
_ONE_THREAD_LOCK = threading.Lock()
_one_thread_depth = 0
_one_thread_limit: contextlib.ExitStack | None = None


@contextlib.contextmanager
def one_blas_thread(be=None) -> Iterator[None]:
    """Run the block with one OpenBLAS thread, for NumPy arrays (``be`` None or the CPU
    backend; nothing changes with the GPU backend).

    LAPACK on many small matrices (the learn stage's batched ``eigh`` of 32 x 32 Gram matrices,
    once per batch; the whitening's ``eigh`` per channel) gains nothing from a second thread but
    waits for it after every small step, and while the other core is busy (the read-ahead
    thread, another stage, another program) each wait can last a scheduler time slice: on a
    shared 2-core machine a batched ``eigh`` of 30 such matrices took 18 ms (median; up to
    240 ms) with two threads and 6-7 ms with one.

    Every stage runs inside such a block (:func:`kilosnake.workflow.stages.run_stage`). How
    OpenBLAS splits a product over its threads (one per core) changes the bits of some
    results, a matrix-vector product or a long dot: with its threads, a CPU sort's amplitudes
    differed with the machine, and with a stage on one thread running beside it. With one, a
    job also keeps to the one core of its rule's ``threads: 1``; beside the GPU, and in the
    input check, curation, export and report, the threads only spun after each small product
    (on 16 cores the export and the report, side by side in two processes, used 96 CPU seconds
    in 7 s).

    The thread count is the process's and stages run side by side in its threads: the first
    block to enter (here or a :class:`WorkerPool`) sets one thread, the last to leave restores
    the count found before.
    """
    if be is not None and be.name != "cpu":
        yield
        return
    global _one_thread_depth, _one_thread_limit
    with _ONE_THREAD_LOCK:
        if _one_thread_depth == 0:
            _one_thread_limit = contextlib.ExitStack()
            _one_thread_limit.enter_context(blas_threads(1))
        _one_thread_depth += 1
    try:
        yield
    finally:
        with _ONE_THREAD_LOCK:
            _one_thread_depth -= 1
            if _one_thread_depth == 0:
                _one_thread_limit.close()
                _one_thread_limit = None


#: spikes a curation stage hands to each worker process at least: below that, forking the
#: processes and collecting their results takes longer than the work (a 10 s, 384-channel sort
#: of 11,500 spikes split in 0.6 s on 8 processes)
SPIKES_PER_WORKER = 20_000


def workers_for(n_spikes: int, workers: int) -> int:
    """The worker processes worth starting for ``n_spikes`` spikes: at most ``workers``, one
    per :data:`SPIKES_PER_WORKER` spikes, at least one (this process)."""
    return max(1, min(int(workers), int(n_spikes) // SPIKES_PER_WORKER))


class WorkerPool:
    """Ordered maps in up to ``workers`` forked processes, started at the first map that needs
    them and kept until :meth:`close` (use as a context manager). With several workers, BLAS
    runs single-threaded from the start of the ``with`` block to its end.

    Parameters
    ----------
    workers : int
        Processes; 1 or fewer runs every map in this process.
    inherited : object, optional
        First argument of every mapped function, handed to the workers through the fork (never
        pickled).
    """

    def __init__(self, workers: int = 1, inherited: Any = None):
        self.workers = int(workers)
        self.inherited = inherited
        self._key = next(_POOL_KEYS)
        self._executor = None
        self._blas_limit: contextlib.ExitStack | None = None

    def __enter__(self) -> WorkerPool:
        self._limit_blas()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def imap(self, func: Callable, items: Iterable, ahead: int | None = None) -> Iterator:
        """``func(item)`` (``func(inherited, item)`` with ``inherited``) for every item, in order.

        Items are drawn lazily: at most ``ahead`` (default ``2 * workers``) are submitted beyond
        the result being waited for, so memory stays bounded when ``items`` streams them.
        """
        iterator = iter(items)
        head = list(itertools.islice(iterator, 2))
        if self.workers <= 1 or len(head) < 2:
            call = func if self.inherited is None else functools.partial(func, self.inherited)
            yield from map(call, itertools.chain(head, iterator))
            return
        task = (
            func
            if self.inherited is None
            else functools.partial(_call_with_inherited, func, self._key)
        )
        ahead = 2 * self.workers if ahead is None else ahead
        pending = collections.deque()
        try:
            for item in itertools.chain(head, iterator):
                pending.append(self._started().submit(task, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def map(self, func: Callable, items: Iterable) -> list:
        """The list of :meth:`imap`, every item submitted at once."""
        items = list(items)
        return list(self.imap(func, items, ahead=len(items)))

    def close(self) -> None:
        """Stop the worker processes (waiting for the running items) and restore BLAS threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            del _INHERITED[self._key]
        if self._blas_limit is not None:
            self._blas_limit.close()
            self._blas_limit = None

    def _limit_blas(self) -> None:
        """Single-threaded BLAS until :meth:`close`, when there are several workers."""
        if self.workers > 1 and self._blas_limit is None:
            self._blas_limit = contextlib.ExitStack()
            self._blas_limit.enter_context(one_blas_thread())

    def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        """The process pool; its workers are forked by the first submission (and inherit
        single-threaded BLAS)."""
        if self._executor is None:
            self._limit_blas()
            _INHERITED[self._key] = self.inherited
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("fork")
            )
        return self._executor


def imap_ordered(
    func: Callable,
    items: Iterable,
    workers: int = 1,
    *,
    inherited: Any = None,
    ahead: int | None = None,
) -> Iterator:
    """``func(item)`` (``func(inherited, item)`` when ``inherited`` is given) for every item, in
    input order, computed by up to ``workers`` forked processes (see :meth:`WorkerPool.imap`)."""
    with WorkerPool(workers, inherited) as pool:
        yield from pool.imap(func, items, ahead)


def map_ordered(
    func: Callable, items: Iterable, workers: int = 1, *, inherited: Any = None
) -> list:
    """The list of ``func(item)`` for every item, in input order, computed by up to ``workers``
    forked processes (no more than there are items)."""
    items = list(items)
    with WorkerPool(min(workers, len(items)), inherited) as pool:
        return pool.map(func, items)
