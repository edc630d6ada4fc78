"""Running the workflow from a test: the one helper every test module uses.

:func:`snakemake` runs the Snakefile in a folder (on the CPU, 2 cores unless told otherwise) and
fails the test with the output's tail when the run fails. :func:`fresh_run` sorts the demo in a
new folder; the session-wide ``demo_sort`` fixture of ``conftest.py`` does so once for every
module that only reads (or dry-runs) a finished sort.
:func:`output_digests` fingerprints every output file so that two runs can be compared byte for
byte; :func:`run_until` kills a run at a chosen moment.
"""

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
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


def snakemake_command(
    workdir: Path, *args: str, config=CONFIG, cores: int | None = 2, snakefile=SNAKEFILE
) -> list:
    """The command line that runs the workflow in ``workdir``.

    ``args`` are Snakemake's own arguments (targets, ``--dry-run``, ...); ``config`` the
    ``key=value`` pairs given after one ``--config`` (Snakemake keeps only the last
    ``--config``, so never pass it in ``args``); ``cores=None`` leaves the cores to a profile.
    """
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    cmd += list(args)
    if config:
        cmd += ["--config", *config]
    return cmd


def snakemake(
    workdir: Path,
    *args: str,
    config=CONFIG,
    cores: int | None = 2,
    check: bool = True,
    timeout: float = 900,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` (see :func:`snakemake_command`).

    Returns the finished process with ``output`` (stdout then stderr) added; with ``check``
    (the default) a failed run fails the test with the tail of that output.
    """
    result = subprocess.run(
        snakemake_command(workdir, *args, config=config, cores=cores),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    result.output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, result.output[-4000:]
    return result


def planned_rules(output: str) -> set:
    """Rule names of the jobs a dry run's output lists (``all`` left out)."""
    return set(re.findall(r"^(?:local)?rule (\w+):", output, flags=re.M)) - {"all"}


def fresh_run(folder: Path, *targets: str) -> Path:
    """Sort the demo recording from scratch in ``folder`` (up to its Phy folder unless
    ``targets`` are given); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    result = snakemake(folder, *(targets or (TARGET,)))
    (folder / "console.txt").write_text(result.output)  # what the person saw
    return folder


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
    snakemake(workdir, "--unlock")
    return snakemake(workdir, TARGET, "--rerun-incomplete", *args).output
