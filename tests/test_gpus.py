"""The GPU slot allocator: concurrent jobs on a machine with several GPUs take different GPUs.

No GPU is needed: the GPU count is given, and the slots are lock files in a temporary folder.
"""

import os
import subprocess
import sys
import time

import pytest

from kilosnake.runtime import gpus

CLAIM = (
    "import os, sys, time; from kilosnake.runtime import gpus; "
    "i = gpus.claim_gpu(n_gpus=int(sys.argv[1]), folder=sys.argv[2]); "
    "print(i, os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); "
    "time.sleep(float(sys.argv[3]))"
)


def start_claim(n_gpus, folder, hold_s):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(n_gpus), str(folder), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_line(proc):
    return proc.stdout.readline().split()


@pytest.fixture(autouse=True)
def no_claim_held():
    """No slot held and CUDA_VISIBLE_DEVICES as it was, before and after each test."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus.release_slot()
    yield
    gpus.release_slot()
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    if before is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = before


def test_slots_in_one_process_are_exclusive(tmp_path):
    a, fa = gpus.acquire_slot(2, tmp_path)
    b, fb = gpus.acquire_slot(2, tmp_path)
    assert {a, b} == {0, 1}
    with pytest.raises(TimeoutError):
        gpus.acquire_slot(2, tmp_path, timeout_s=0.2, poll_s=0.05)
    os.close(fa)
    assert gpus.acquire_slot(2, tmp_path, timeout_s=1)[0] == a
    os.close(fb)


def test_concurrent_jobs_take_different_gpus_and_set_the_variable(tmp_path):
    jobs = [start_claim(2, tmp_path, 3) for _ in range(2)]
    try:
        seen = [first_line(j) for j in jobs]
    finally:
        for j in jobs:
            j.kill()
            j.wait()
    assert sorted(s[0] for s in seen) == ["0", "1"]
    assert all(index == visible for index, visible in seen)


def test_a_third_job_waits_for_a_free_gpu_then_takes_it(tmp_path):
    holders = [start_claim(2, tmp_path, 30) for _ in range(2)]
    try:
        taken = {first_line(h)[0]: h for h in holders}
        waiting = start_claim(2, tmp_path, 0)
        time.sleep(1.5)
        assert waiting.poll() is None  # both GPUs held: it waits
        taken["1"].kill()  # a killed job's lock goes with it
        taken["1"].wait()
        out, _ = waiting.communicate(timeout=30)
        assert out.split()[:2] == ["1", "1"]
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_nothing_is_done_when_the_gpu_is_assigned_or_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpus.claim_gpu(n_gpus=4, folder=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.claim_gpu(n_gpus=1, folder=tmp_path) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert list(tmp_path.iterdir()) == []


def test_claim_is_logged_and_kept_for_the_process(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level("INFO", logger="kilosnake.runtime.gpus"):
        assert gpus.claim_gpu(n_gpus=2, folder=tmp_path) == 0
    assert "GPU 0 of 2 taken" in caplog.text
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpus.claim_gpu(n_gpus=2, folder=tmp_path) == 0  # the same slot, not a second one
    assert gpus.try_slot(tmp_path, 1) is not None  # slot 1 stayed free


def test_lock_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KILOSNAKE_GPU_LOCK_DIR", str(tmp_path / "shared"))
    assert gpus.lock_dir() == tmp_path / "shared"
    monkeypatch.delenv("KILOSNAKE_GPU_LOCK_DIR")
    assert gpus.lock_dir() == gpus.DEFAULT_LOCK_DIR
