"""Peak host memory and disk use of every stage, for recordings of different lengths.

    python benchmarks/memory.py --minutes 10 30 --cores 2 --workdir /tmp/kilosnake-memory
    python benchmarks/memory.py --preset np --minutes 2 --device gpu --workdir /tmp/np-disk

For each length it generates a recording (``kilosnake.groundtruth.generate`` preset, 32 channels for
``small``), sorts it up to the Phy folder and the QC report, scores the Phy folder against the
ground truth, and reads back, for every rule, the wall time and peak resident memory
(``max_rss``) that Snakemake's ``benchmark:`` directive recorded, and the size on disk of every
output. Every Snakemake run (and the scorecard) runs under ``/usr/bin/time -v`` when it exists:
its "Maximum resident set size" is the peak of the largest single process of the run, the
whole-run peak. It prints one table of peak memory per stage and length (memory is flat when the
longest recording needs no more than ``FLAT_FACTOR`` times the shortest), the whole-run peaks,
then the disk use of each output per hour of recording (scaled from the longest run).

``--until spikes.zarr`` stops after that output (e.g. to let a long sort run while later stages
change); a later run without it finishes the sort, and the whole-run peak is the largest over
every run logged in ``results/<recording>/benchmarks/whole_run.tsv``.

Generated recordings and results are kept in ``--workdir``; a rerun reuses them (Snakemake only
redoes what is missing or older than its inputs: ``--rerun-triggers mtime``, so that a parameter
added to the table meanwhile does not redo a long sort), so an interrupted benchmark can be
resumed.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from kilosnake.params import SORT_RULES

ROOT = Path(__file__).resolve().parents[1]
STAGES = (*SORT_RULES, "input_report", "traces_plot", "report")
#: what a full run builds for a recording (the scorecard is scored outside the workflow: a raw
#: file given with dat= has no ground truth in the workflow's eyes)
TARGETS = ("phy", "report.html")
TIME = "/usr/bin/time"
OUTPUTS = (
    "input.json",
    "whitening.zarr",
    "preprocessed.zarr",
    "drift.zarr",
    "detect.zarr",
    "templates.zarr",
    "spikes.zarr",
    "merge.zarr",
    "split.zarr",
    "cutoff.zarr",
    "phy",
)
#: memory counts as flat when the longest recording's peak is within this factor of the shortest
FLAT_FACTOR = 1.25


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[10.0, 30.0],
        help="recording lengths to compare (default: 10 30)",
    )
    parser.add_argument("--preset", default="small", help="generator preset (default: small)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--workdir", type=Path, default=Path("memory-benchmark"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--until",
        default=None,
        metavar="OUTPUT",
        help="build only up to this output (e.g. spikes.zarr) and print nothing",
    )
    return parser.parse_args(argv)


def recording_stem(preset: str, minutes: float) -> str:
    return f"{preset}_{minutes:g}min"


def generate_recording(workdir: Path, preset: str, minutes: float, seed: int) -> Path:
    """The raw file of a generated recording of ``minutes`` (written once)."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    stem = recording_stem(preset, minutes)
    dat = workdir / "recordings" / f"{stem}.bin"
    if not dat.exists():
        t0 = time.perf_counter()
        generate(preset_config(preset, duration_s=60.0 * minutes), dat.parent, name=stem, seed=seed)
        print(f"generated {dat} in {time.perf_counter() - t0:.0f} s", flush=True)
    return dat


def n_channels_total(dat: Path) -> int:
    import json

    return int(json.loads(dat.with_suffix(".meta.json").read_text())["n_channels_total"])


def sort(workdir: Path, dat: Path, device: str, cores: int, until: str | None = None) -> Path:
    """Sort ``dat`` up to its Phy folder and report (or ``until``); return its results folder."""
    stem = dat.stem
    probe = dat.with_name(f"{stem}.probe.json")
    targets = [f"results/{stem}/{name}" for name in ([until] if until else TARGETS)]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        str(cores),
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *targets,
        "--rerun-incomplete",
        "--rerun-triggers",
        "mtime",
        "--config",
        f"dat={dat}",
        f"probe={probe}",
        f"n_channels={n_channels_total(dat)}",
        f"device={device}",
    ]
    results = workdir / "results" / stem
    t0 = time.perf_counter()
    timed_run(cmd, results / "benchmarks", "snakemake " + " ".join(targets))
    print(f"sorted {dat.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def score(results: Path, dat: Path) -> None:
    """Score the Phy folder against the recording's ground truth (timed like a stage)."""
    gt = dat.with_name(f"{dat.stem}_gt.npz")
    out = results / "scorecard.txt"
    code = (
        "from kilosnake.groundtruth.score import write_scorecard; "
        f"print(write_scorecard({str(results / 'phy')!r}, {str(gt)!r}, {str(out)!r}))"
    )
    t0 = time.perf_counter()
    peak_kb = timed_run([sys.executable, "-c", code], results / "benchmarks", "scorecard")
    seconds = time.perf_counter() - t0
    if peak_kb is not None:
        (results / "benchmarks" / "scorecard.tsv").write_text(
            f"s\tmax_rss\n{seconds:.4f}\t{peak_kb / 1024:.2f}\n"
        )


def timed_run(cmd: list, bench_dir: Path, label: str) -> int | None:
    """Run ``cmd`` (under ``/usr/bin/time -v`` when present); log and return its peak in kB.

    The peak is the largest resident set of any single process of the run (getrusage of the
    children); it is appended to ``whole_run.tsv`` in ``bench_dir``.
    """
    bench_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(TIME, os.X_OK):
        subprocess.run(cmd, check=True)
        return None
    report = bench_dir / "time-v.txt"
    subprocess.run([TIME, "-v", "-o", str(report), *cmd], check=True)
    peak_kb = parse_time_v(report.read_text())
    with open(bench_dir / "whole_run.tsv", "a") as f:
        f.write(f"{label}\t{peak_kb}\n")
    return peak_kb


def parse_time_v(text: str) -> int:
    """ "Maximum resident set size (kbytes)" of a ``/usr/bin/time -v`` report."""
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if match is None:
        raise ValueError("no 'Maximum resident set size' line in the /usr/bin/time -v report")
    return int(match.group(1))


def whole_run_peak_mb(results: Path) -> float | None:
    """Largest whole-run peak (MB) logged for a recording, over every run and the scorecard."""
    path = results / "benchmarks" / "whole_run.tsv"
    if not path.exists():
        return None
    kbs = [int(line.rsplit("\t", 1)[1]) for line in path.read_text().splitlines() if line]
    return max(kbs) / 1024 if kbs else None


def stage_benchmarks(results: Path) -> dict:
    """``{rule: (seconds, max_rss MB)}`` from the rules' ``benchmark:`` files."""
    out = {}
    for rule in STAGES:
        path = results / "benchmarks" / f"{rule}.tsv"
        if path.exists():
            with open(path) as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            out[rule] = (float(row["s"]), float(row["max_rss"]))
    return out


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def memory_table(runs: dict) -> str:
    """Peak memory per stage (columns: recording lengths) and whether it stays flat."""
    lengths = sorted(runs)
    head = "| stage | " + " | ".join(f"{m:g} min: s / MB" for m in lengths) + " | flat |"
    rows = [head, "|" + " --- |" * (len(lengths) + 2)]
    for rule in STAGES:
        cells = [runs[m]["bench"].get(rule) for m in lengths]
        if any(c is None for c in cells):
            continue
        flat = cells[-1][1] <= FLAT_FACTOR * cells[0][1]
        rows.append(
            f"| {rule} | "
            + " | ".join(f"{s:.0f} / {mb:.0f}" for s, mb in cells)
            + f" | {'yes' if flat else 'NO'} |"
        )
    return "\n".join(rows)


def disk_table(results: Path, minutes: float, raw: Path) -> str:
    """Size of every output, and per hour of recording (scaled linearly)."""
    per_hour = 60.0 / minutes
    rows = ["| output | MB | GB per hour |", "| --- | --- | --- |"]
    total = 0
    for name in OUTPUTS:
        path = results / name
        if path.exists():
            size = disk_bytes(path)
            total += size
            rows.append(f"| {name} | {size / 1e6:.1f} | {size * per_hour / 1e9:.2f} |")
    rows.append(f"| all outputs | {total / 1e6:.1f} | {total * per_hour / 1e9:.2f} |")
    raw_size = raw.stat().st_size
    rows.append(
        f"| raw file (read, not copied) | {raw_size / 1e6:.1f} | {raw_size * per_hour / 1e9:.2f} |"
    )
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    runs = {}
    for minutes in sorted(args.minutes):
        dat = generate_recording(workdir, args.preset, minutes, args.seed)
        results = sort(workdir, dat, args.device, args.cores, args.until)
        if args.until:
            continue
        score(results, dat)
        runs[minutes] = {"bench": stage_benchmarks(results), "results": results, "dat": dat}
    if not runs:
        return 0
    print(
        f"\nmachine: {platform.node()} ({platform.machine()}), device={args.device}, "
        f"--cores {args.cores}, preset {args.preset}"
    )
    print("\nwall time and peak resident memory per stage (snakemake benchmark: max_rss)\n")
    print(memory_table(runs))
    print(
        "\nwhole-run peak (/usr/bin/time -v, largest single process of every run): "
        + ", ".join(f"{m:g} min {_mb(whole_run_peak_mb(runs[m]['results']))}" for m in sorted(runs))
    )
    longest = max(runs)
    spikes = _n_spikes(runs[longest]["results"])
    print(f"\ndisk use of the {longest:g} min recording ({spikes} spikes), scaled per hour\n")
    print(disk_table(runs[longest]["results"], longest, runs[longest]["dat"]))
    return 0


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _n_spikes(results: Path) -> int:
    from kilosnake.io.store import open_store

    return int(open_store(results / "spikes.zarr")["time"].shape[0])


if __name__ == "__main__":
    sys.exit(main())
