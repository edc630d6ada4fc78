"""What finished and what failed, per recording: ``results/summary.tsv``.

The workflow writes the table at the end of every run (Snakemake's ``onsuccess`` and ``onerror``
handlers), so that with ``--keep-going`` and many recordings one look tells which recordings have
a Phy folder and, for the others, which stage stopped them and why. It only looks at files: the
stage outputs under ``results/<recording>/`` and their logs.

A recording is ``failed`` when a stage of the last run failed for it (a rule log written during
this run says so), even if a Phy folder from an earlier run is still there; the ``note`` column
then says that the outputs on disk are from an earlier run with other inputs or parameters (the
parameters each store recorded, compared with the current config), and when a Phy folder that
was curated was kept aside by the export.

    python -m kilosnake.summary [results]      # the same table for every recording found
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from kilosnake.export.manifest import kept_folders
from kilosnake.params import PARAMS_BY_NAME, resolve, stage_names

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
COLUMNS = (
    "recording",
    "status",
    "stage",
    "n_units",
    "n_good",
    "n_spikes",
    "message",
    "log",
    "note",
)
#: parameters that change how a run executes, never its result: not compared with the stores'
EXECUTION_KNOBS = frozenset(stage_names("workflow")) | {"gpu_memory_gb"}
#: a stage's failure as kilosnake.runtime.logs.stage_logging writes it
_FAILED_LINE = re.compile(r" ERROR kilosnake: (\S+) failed: (.*)")
_UNEXPECTED_LINE = re.compile(r" ERROR kilosnake: (\S+) failed with an unexpected error")
#: logs of a stage's jobs besides ``<stage>.log``: the block jobs and the gather of a scattered
#: stage (``scatter_blocks > 1``)
SCATTERED_LOGS = {
    "preprocess": ("preprocess_block.*.log", "gather_preprocessed.log"),
    "final_pass": ("final_pass_block.*.log", "gather_spikes.log"),
}


def filesystem_now(folder="results") -> float:
    """Now, as the filesystem holding ``folder`` stamps the files written there: a run's start
    to compare log times with. The system clock would not do: file times come from a coarser
    clock (a few milliseconds behind ``time.time()``) or, on a network filesystem, from the
    server's. 0.0 when ``folder`` does not exist yet (every file in it will be new)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0.0
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".clock-") as marker:
            return os.fstat(marker.fileno()).st_mtime
    except OSError:  # a folder one cannot write to: no log of this run lands there either
        return time.time()


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


def _phy_counts(phy: Path) -> tuple:
    """Units with spikes (clusters labelled noise left out), good units among them and spikes
    of a Phy folder ("" when unreadable)."""
    import numpy as np

    try:
        times = np.load(phy / "spike_times.npy", mmap_mode="r", allow_pickle=False)
        labels_file = phy / "spike_clusters.npy"
        if not labels_file.exists():
            labels_file = phy / "spike_templates.npy"
        clusters = np.unique(np.load(labels_file, allow_pickle=False))
        labels = _cluster_labels(phy / "cluster_KSLabel.tsv")
        units = [int(c) for c in clusters if labels.get(int(c)) != "noise"]
        good = sum(labels.get(u) == "good" for u in units)
        return len(units), int(good), int(times.shape[0])
    except (OSError, ValueError):
        return "", "", ""


def _cluster_labels(path: Path) -> dict:
    """``{cluster id: KSLabel}`` of a ``cluster_KSLabel.tsv``."""
    with path.open() as f:
        return {int(r["cluster_id"]): r.get("KSLabel") for r in csv.DictReader(f, delimiter="\t")}


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


def log_failure(log: Path) -> str | None:
    """The first line of the error a rule log ends with, or None when its stage did not fail
    (it logged its closing ``done in`` line, or nothing naming an error)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        found = _FAILED_LINE.search(line)
        if found:
            return found.group(2).strip()[:300]
        if _UNEXPECTED_LINE.search(line):
            return _last_error_line(log)
    if " done in " in text:
        return None
    last = _last_error_line(log)
    return last if any(w in last.lower() for w in ("error", "exception")) else None


def _stage_order(stage: str) -> int:
    names = [s for s, _ in STAGES]
    base = stage.split("/")[-1].split(".")[0].replace("_block", "")
    base = {"gather_preprocessed": "preprocess", "gather_spikes": "final_pass"}.get(base, base)
    return names.index(base) if base in names else len(names)


def recent_failure(folder: Path, since: float | None = None) -> tuple | None:
    """``(stage, message, log)`` of the first stage (in pipeline order) whose log, written at or
    after ``since`` (a time, seconds since the epoch: this run's start), says it failed; None
    when none did. Without ``since``: logs written after the Phy folder (all, without one)."""
    if since is None:
        params_py = folder / "phy" / "params.py"
        since = params_py.stat().st_mtime if params_py.is_file() else 0.0
    logs = list(folder.glob("logs/*.log")) + list(folder.glob("shank*/logs/*.log"))
    found = []
    for log in logs:
        if log.stat().st_mtime < since:
            continue
        message = log_failure(log)
        if message is not None:
            rel = log.relative_to(folder).with_suffix("")
            stage = "/".join(p for p in rel.parts if p != "logs").replace(".refused", "")
            found.append((_stage_order(stage), stage, message, str(log)))
    return min(found)[1:] if found else None


def recording_status(
    name: str, results="results", since: float | None = None, config=None, source=None
) -> dict:
    """One row of the summary: ``done``, ``failed`` (with the stage and the first line of its
    error), ``incomplete`` or ``not started``, and a note on outputs from an earlier run.

    Parameters
    ----------
    name : str
        The recording (its folder under ``results``).
    results : path
        The results folder.
    since : float, optional
        When this run started (:func:`filesystem_now`): a stage log written since then that names a
        failure makes the recording ``failed``. Default: a log newer than the Phy folder.
    config : dict, optional
        The run's config: the stores' recorded parameters are compared with it (``note``).
    source : dict, optional
        The recording's description (raw file, probe, channels...): compared with the one
        ``input.json`` was made from (``note``).
    """
    folder = Path(results) / name
    row = dict.fromkeys(COLUMNS, "")
    row["recording"] = name
    row["note"] = "; ".join(recording_notes(folder, config, source, since))
    failure = recent_failure(folder, since)
    if failure is not None:
        row["status"] = "failed"
        row["stage"], row["message"], row["log"] = failure
        return row
    phy = folder / "phy"
    if (phy / "params.py").is_file():
        row["status"], row["stage"] = "done", "export_phy"
        row["n_units"], row["n_good"], row["n_spikes"] = _phy_counts(phy)
        return row
    return _unfinished_status(folder, row)


def _unfinished_status(folder: Path, row: dict) -> dict:
    """The row of a recording without a Phy folder: where it stopped, from its files."""
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


# --------------------------------------------------------------------------------------------
# outputs from an earlier run


def recording_notes(folder: Path, config=None, source=None, since=None) -> list:
    """What the user should know about the outputs on disk: made with other inputs or
    parameters than the current ones, or a curated Phy folder kept aside (since ``since``, the
    run's start; without it, the latest kept)."""
    notes = []
    changed = {}
    if source is not None:
        changed.update(changed_inputs(folder / "input.json", source))
    if config is not None:
        changed.update(changed_params(folder, config))
    if changed:
        text = ", ".join(f"{k} {_short(a)} (now {_short(b)})" for k, (a, b) in changed.items())
        notes.append(
            f"outputs on disk are from an earlier run with other inputs or parameters: {text}"
        )
    kept = kept_folders(folder / "phy")
    if since is not None:
        kept = [k for k in kept if k.stat().st_ctime >= since]
    if kept:
        notes.append(
            f"the Phy folder had been curated: kept whole as {kept[-1]} (see the README, "
            "Curation is kept, to carry labels over)"
        )
    return notes


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def store_params(store: Path) -> dict | None:
    """The parameters a finished store recorded (its ``zarr.json`` attributes), or None."""
    try:
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    params = attrs.get("params") if attrs.get("complete") else None
    return params if isinstance(params, dict) else None


def changed_params(folder: Path, config: dict) -> dict:
    """``{name: (recorded, current)}`` of the result parameters the recording's stores were
    made with that differ from ``config`` (execution knobs and per-shank seeds left out)."""
    current = json.loads(json.dumps(resolve(config), default=list))
    changed = {}
    for _, output in STAGES:
        recorded = store_params(folder / output) if output.endswith(".zarr") else None
        for key, value in (recorded or {}).items():
            if key in PARAMS_BY_NAME and key not in EXECUTION_KNOBS and key in current:
                if value != current[key] and key not in changed:
                    changed[key] = (value, current[key])
    return changed


def changed_inputs(input_json: Path, source: dict) -> dict:
    """``{name: (recorded, current)}`` of the recording's description (raw file, probe,
    channels, dtype, sample rate, µV per bit) that differ from what ``input.json`` was made of."""
    try:
        requested = json.loads(input_json.read_text()).get("requested")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(requested, dict):
        return {}
    return {
        key: (requested[key], source.get(key))
        for key in requested
        if key in source and json.loads(json.dumps(source.get(key), default=str)) != requested[key]
    }


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


def summarize(names, results="results", since=None, config=None) -> list[dict]:
    """Rows of :func:`recording_status` for ``names`` (in that order); a mapping of names to
    recording descriptions (the workflow's ``RECORDINGS``) also compares each description with
    the one its ``input.json`` was made from."""
    sources = names if isinstance(names, dict) else {}
    return [recording_status(name, results, since, config, sources.get(name)) for name in names]


def format_table(rows) -> str:
    """The rows as tab-separated text with a header."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: str(row[k]).replace("\t", " ") for k in COLUMNS})
    return buf.getvalue()


def scorecard_headline(path: Path) -> str | None:
    """The scorecard's verdict in one line (well detected units, mean accuracy / recall)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    picked = [
        " ".join(line.split())
        for line in lines
        if line.strip().startswith(("well detected (", "mean accuracy / recall"))
    ]
    return "; ".join(picked) if picked else None


def closing_lines(row: dict, results="results") -> list:
    """What the end of a run says about one recording: where its Phy folder and report are and
    how many units it has, or which stage failed and why."""
    name, folder = row["recording"], Path(results) / row["recording"]
    if row["status"] == "done":
        n_mua = row["n_units"] - row["n_good"] if isinstance(row["n_units"], int) else "?"
        lines = [
            f"{name}: done, {row['n_units']} units ({row['n_good']} good, {n_mua} mua), "
            f"{row['n_spikes']} spikes",
            f"  Phy folder: {folder / 'phy'}  (phy template-gui {folder / 'phy' / 'params.py'})",
        ]
        if (folder / "report.html").is_file():
            lines.append(f"  report:     {folder / 'report.html'}")
        headline = scorecard_headline(folder / "scorecard.txt")
        if headline:
            lines.append(f"  scorecard:  {headline} ({folder / 'scorecard.txt'})")
    elif row["status"] == "failed":
        lines = [f"{name}: FAILED in {row['stage']}: {row['message']}", f"  log: {row['log']}"]
    else:
        lines = [f"{name}: {row['status']} (next stage: {row['stage']})"]
    return lines + [f"  note: {note}" for note in row["note"].split("; ") if note]


def write_summary(
    names, path="results/summary.tsv", results="results", since=None, config=None
) -> str:
    """Write the summary of ``names`` to ``path`` and return the closing lines of the run (for
    printing): one line per recording done or failed, its Phy folder, report and notes."""
    rows = summarize(names, results, since, config)
    text = format_table(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    done = sum(1 for row in rows if row["status"] == "done")
    failed = sum(1 for row in rows if row["status"] == "failed")
    head = f"kilosnake summary ({path}): {done} of {len(rows)} recordings done"
    head += f", {failed} failed" if failed else ""
    return "\n".join([head] + [line for row in rows for line in closing_lines(row, results)])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    results = Path(argv[0] if argv else "results")
    names = sorted(p.name for p in results.iterdir() if p.is_dir()) if results.is_dir() else []
    sys.stdout.write(format_table(summarize(names, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
