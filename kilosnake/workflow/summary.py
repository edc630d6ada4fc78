"""What finished and what failed, per recording: ``results/summary.tsv``.

The workflow writes the table at the end of every run (Snakemake's ``onsuccess`` and ``onerror``
handlers), so that with ``--keep-going`` and many recordings one look tells which recordings have
a Phy folder and, for the others, which stage stopped them and why. It only looks at files: the
stage outputs under ``results/<recording>/`` and their logs.

    python -m kilosnake.summary [results]      # the same table for every recording found
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

#: Stages in pipeline order, with the output that marks each as complete (stores are written to a
#: temporary path and renamed, so an existing output is a complete one).
STAGES = (
    ("check_input", "input.json"),
    ("whitening", "whitening.zarr"),
    ("preprocess", "preprocessed.zarr"),
    ("drift", "drift.zarr"),
    ("detect", "detect.zarr"),
    ("learn", "templates.zarr"),
    ("final_pass", "spikes.zarr"),
    ("merge", "merge.zarr"),
    ("split", "split.zarr"),
    ("cutoff", "cutoff.zarr"),
    ("export_phy", "phy"),
)
COLUMNS = ("recording", "status", "stage", "n_units", "n_spikes", "message", "log")
#: logs of a stage's jobs besides ``<stage>.log``: the block jobs and the gather of a scattered
#: stage (``scatter_blocks > 1``)
SCATTERED_LOGS = {
    "preprocess": ("preprocess_block.*.log", "gather_preprocessed.log"),
    "final_pass": ("final_pass_block.*.log", "gather_spikes.log"),
}


def _last_error_line(log: Path) -> str:
    """The most telling line of a failed stage's log: the last one naming an error."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "exception" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""


def _phy_counts(phy: Path) -> tuple[int | str, int | str]:
    import numpy as np

    try:
        times = np.load(phy / "spike_times.npy", mmap_mode="r", allow_pickle=False)
        labels_file = phy / "spike_clusters.npy"
        if not labels_file.exists():
            labels_file = phy / "spike_templates.npy"
        labels = np.load(labels_file, allow_pickle=False)
        return int(np.unique(labels).size), int(times.shape[0])
    except (OSError, ValueError):
        return "", ""


def stage_log(logs: Path, stage: str) -> Path | None:
    """The log that tells why ``stage`` stopped: of its jobs' logs (one, or the block jobs' and
    the gather's), the first naming an error, else the newest; None when there is none."""
    patterns = (f"{stage}.log",) + SCATTERED_LOGS.get(stage, ())
    found = sorted({p for pattern in patterns for p in logs.glob(pattern)})
    for log in found:
        if _last_error_line(log) and any(
            w in _last_error_line(log).lower() for w in ("error", "exception")
        ):
            return log
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def recording_status(name: str, results="results") -> dict:
    """One row of the summary: ``done``, ``failed`` (with the stage and its log's last error
    line) or ``not started``."""
    folder = Path(results) / name
    row = dict.fromkeys(COLUMNS, "")
    row["recording"] = name
    phy = folder / "phy"
    if (phy / "params.py").is_file():
        row["status"], row["stage"] = "done", "export_phy"
        row["n_units"], row["n_spikes"] = _phy_counts(phy)
        return row
    shanks = shank_folders(folder)
    if not shanks:
        stopped = first_unfinished(folder, STAGES)
    else:  # one job per shank and stage: the input check, each shank's stages, the export
        stopped = (
            first_unfinished(folder, STAGES[:1])
            or first_shank_unfinished(shanks)
            or first_unfinished(folder, STAGES[-1:])
        )
    if stopped is None:
        row["status"], row["stage"] = "incomplete", "export_phy"
        return row
    row["stage"], log = stopped
    if log is not None:
        row["status"], row["message"], row["log"] = "failed", _last_error_line(log), str(log)
    else:
        row["status"] = "not started" if row["stage"] == "check_input" else "incomplete"
    return row


def shank_folders(folder: Path) -> list:
    """The shank folders of a recording sorted one job per shank and stage (``shank<k>``, in
    shank order; ``scatter_shanks``); empty for any other recording. (A recording whose stage
    jobs loop over the shanks has only the shanks' ``input.json`` there, its stores on top.)"""
    found = [p for p in folder.glob("shank*") if p.is_dir() and p.name[5:].isdigit()]
    if not any(
        (p / "whitening.zarr").exists() or (p / "logs" / "whitening.log").exists() for p in found
    ):
        return []
    return sorted(found, key=lambda p: int(p.name[5:]))


def first_shank_unfinished(shanks) -> tuple[str, Path | None] | None:
    """Of the shanks' first unfinished stages (``shank<k>/<stage>``), a failed one if any."""
    found = [
        (f"{shank.name}/{stage}", log)
        for shank in shanks
        for stage, log in [first_unfinished(shank, STAGES[1:-1]) or (None, None)]
        if stage
    ]
    failed = [f for f in found if f[1] is not None]
    return (failed or found or [None])[0]


def first_unfinished(folder: Path, stages) -> tuple[str, Path | None] | None:
    """The first of ``stages`` whose output is missing under ``folder``, with the log saying why
    it failed (None when it has none); None when every output is there."""
    for stage, output in stages:
        if not (folder / output).exists():
            return stage, stage_log(folder / "logs", stage)
    return None


def summarize(names, results="results") -> list[dict]:
    """Rows of :func:`recording_status` for ``names`` (in that order)."""
    return [recording_status(name, results) for name in names]


def format_table(rows) -> str:
    """The rows as tab-separated text with a header."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: str(row[k]).replace("\t", " ") for k in COLUMNS})
    return buf.getvalue()


def write_summary(names, path="results/summary.tsv", results="results") -> str:
    """Write the summary of ``names`` to ``path`` and return its text (for printing)."""
    text = format_table(summarize(names, results))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    done = sum(1 for line in text.splitlines()[1:] if line.split("\t")[1] == "done")
    total = len(text.splitlines()) - 1
    return f"kilosnake summary ({path}): {done} of {total} recordings done\n{text}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = Path(argv[0] if argv else "results")
    names = sorted(p.name for p in results.iterdir() if p.is_dir()) if results.is_dir() else []
    sys.stdout.write(format_table(summarize(names, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
