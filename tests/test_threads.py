"""Threads shared by a process: the named pools and the kept threads GPU stages run on."""

import threading

import pytest

from kilosnake.runtime.threads import on_kept_thread, shared_thread_pool


def test_a_named_pool_is_made_once_and_shared():
    first = shared_thread_pool("test-pool", 2)
    assert shared_thread_pool("test-pool", 5) is first
    assert first.submit(threading.current_thread).result().name.startswith("test-pool")


def test_a_kept_thread_returns_the_result_and_serves_the_next_call():
    first = on_kept_thread(threading.current_thread).result()
    second = on_kept_thread(threading.current_thread).result()
    assert first is second  # idle again when the caller has its result: reused
    assert first is not threading.current_thread() and first.daemon
    assert on_kept_thread(divmod, 17, 5).result() == (3, 2)
    assert first.is_alive()  # it never ends: what a library keeps per thread is kept


def test_a_kept_thread_hands_the_error_to_the_caller_and_stays():
    def fail():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        on_kept_thread(fail).result()
    assert on_kept_thread(threading.current_thread).result().is_alive()


def test_calls_at_the_same_time_get_threads_of_their_own():
    started, release = threading.Barrier(3), threading.Event()

    def wait_for_the_others():
        started.wait(timeout=10)  # only passes when both calls run at once
        release.wait(timeout=10)
        return threading.current_thread()

    futures = [on_kept_thread(wait_for_the_others) for _ in range(2)]
    started.wait(timeout=10)
    release.set()
    a, b = (f.result(timeout=10) for f in futures)
    assert a is not b
