"""Whole-workflow runs of the demo recording, shared by the determinism and resume tests.

:func:`reference_run` sorts the demo once per test session (the first module that asks pays for
it); :func:`fresh_run` sorts it again in a new folder. :func:`output_digests` fingerprints every
output file so that two runs can be compared byte for byte.
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDING = "demo"
#: what each run builds: the sort up to its Phy folder (the QC report is not compared)
TARGET = f"results/{RECORDING}/phy"
CONFIG = ("device=cpu",)
#: files that are not outputs of ours: Snakemake's marker in directory outputs, what phylib and
#: phy write beside a Phy folder when they open it
FOREIGN_FILES = {".snakemake_timestamp", "phy.log"}
FOREIGN_FOLDERS = {".phy", "__pycache__"}
#: the outputs compared between runs: every stage's store, the Phy folder, the input check
COMPARED = ("*.zarr", "phy", "input.json")

_REFERENCE = {}


def snakemake_command(workdir: Path, *args: str) -> list:
    """The command line that runs the workflow in ``workdir`` on the CPU (2 cores)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *args,
        "--config",
        *CONFIG,
    ]


def run_snakemake(workdir: Path, *args: str, timeout: float = 900) -> str:
    """Run the workflow to the end; fail the test with its output tail if it fails."""
    result = subprocess.run(
        snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def fresh_run(folder: Path) -> Path:
    """Sort the demo recording from scratch in ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    run_snakemake(folder, TARGET)
    return folder


def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted sort of the demo per session (shared by every module that asks)."""
    if "run" not in _REFERENCE:
        _REFERENCE["run"] = fresh_run(tmp_path_factory.mktemp("reference"))
    return _REFERENCE["run"]


def results(workdir: Path) -> Path:
    return workdir / "results" / RECORDING


def stage_seconds(workdir: Path, rule: str) -> float:
    """Wall time of ``rule`` in a finished run, from its ``benchmark:`` file."""
    lines = (results(workdir) / "benchmarks" / f"{rule}.tsv").read_text().splitlines()
    return float(lines[1].split("\t")[0])


def output_files(folder: Path) -> list:
    """Files of the compared outputs under ``folder`` (relative paths, sorted), foreign files
    left out."""
    tops = {p for pattern in COMPARED for p in folder.glob(pattern)}
    paths = [p for top in tops for p in ([top] if top.is_file() else top.rglob("*"))]
    files = []
    for path in paths:
        rel = path.relative_to(folder)
        if (
            path.is_file()
            and path.name not in FOREIGN_FILES
            and not (FOREIGN_FOLDERS & set(rel.parts))
        ):
            files.append(rel)
    return sorted(files)


def output_digests(workdir: Path) -> dict:
    """``{relative path: sha256}`` of every output of the recording (stores, Phy folder, ...)."""
    base = results(workdir)
    return {
        str(rel): hashlib.sha256((base / rel).read_bytes()).hexdigest()
        for rel in output_files(base)
    }


def differing(a: dict, b: dict) -> list:
    """Paths whose digests differ, or that only one side has."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def run_until(workdir: Path, ready, *args: str, timeout: float = 600) -> None:
    """Start the workflow, wait until ``ready()`` is true, then SIGKILL its process group.

    Everything the workflow started (Snakemake and the job it runs) dies at once, as on a
    power cut or an out-of-memory kill.
    """
    log = open(workdir / "snakemake-killed.log", "a")
    proc = subprocess.Popen(
        snakemake_command(workdir, *args),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the workflow ended before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill the workflow never came"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def resume(workdir: Path, *args: str) -> str:
    """What a user does after a crash: remove Snakemake's stale lock, rerun what is incomplete."""
    run_snakemake(workdir, "--unlock")
    return run_snakemake(workdir, TARGET, "--rerun-incomplete", *args)
