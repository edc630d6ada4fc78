"""Several GPUs on one machine: the workflow with `--resources gpu=1` and `gpu=2`, time blocks on.

    python benchmarks/multi_gpu.py --json out/multi_gpu.json         # np: 384 ch, 300 s, 2 GPUs
    python benchmarks/multi_gpu.py --gpus 1 --json out/g1.json       # one run per call: the
    python benchmarks/multi_gpu.py --gpus 2 --json out/g2.json       # table has both
    python benchmarks/multi_gpu.py --gpus 1 2 4 --blocks 8            # more GPUs
    python benchmarks/multi_gpu.py --device cpu --preset demo --duration 10 --gpus 1 2 \
        --blocks 2 --cores 2                                          # smoke test, no GPU

Steps:

1. The preset's recording (``np`` = 384 channels + sync column, 300 s) is generated into
   ``--workdir`` unless it is already there (``benchmarks/gpu_speed.py`` generates it, writing the
   file with a pool of processes).
2. For every ``G`` of ``--gpus`` the workflow sorts it up to the Phy folder in a fresh run folder:
   ``snakemake --cores C --resources gpu=G --config scatter_blocks=B``. Nothing sets
   ``CUDA_VISIBLE_DEVICES``, so each GPU job takes a free GPU itself
   (``kilosnake.runtime.gpus``); the block jobs of preprocess and final pass run ``G`` at a time,
   one per GPU.
3. Per rule, the wall time of each job (``benchmark:`` files) and, for the scattered stages, the
   stage's span: from the first block job's start to its gather's end (job start = end − wall
   time, end = the benchmark file's modification time). Which GPU each job used comes from its
   log (``GPU i of n taken``).
4. One table: per stage wall time (block jobs: span, and the sum of the block jobs' walls) for
   each ``G``, the speed-up of the scattered stages and of the whole run against the first
   ``G``; ``--json`` writes every figure. Each run's figures are also kept in ``--workdir``, and
   the table includes the runs of ``--compare`` made by an earlier call on the same recording
   and blocks, so the runs can be split over calls.

The Phy folders of the runs must be identical (same blocks, same seed): the script checks it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kilosnake.params import SORT_RULES

ROOT = Path(__file__).resolve().parents[1]
#: stages whose jobs are split over time blocks, and the rules that make them up
SCATTERED = {
    "preprocess": ("preprocess_block", "gather_preprocessed"),
    "final_pass": ("final_pass_block", "gather_spikes"),
}
#: the other stages, in pipeline order
STAGES = SORT_RULES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="np", help="generator preset (default np)")
    parser.add_argument(
        "--duration", type=float, default=None, help="recording length in s (default: the preset's)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--gpus",
        type=int,
        nargs="+",
        default=[1, 2],
        help="values of --resources gpu= to run (default 1 2)",
    )
    parser.add_argument(
        "--compare",
        type=int,
        nargs="*",
        default=[1, 2],
        help="gpu= values whose earlier runs (kept in --workdir) join the table",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=8,
        help="scatter_blocks: time blocks of preprocess and final pass",
    )
    parser.add_argument("--device", default="gpu", choices=("gpu", "cpu", "auto"))
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/multi-gpu"))
    parser.add_argument(
        "--gen-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes writing the recording",
    )
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra snakemake --config entries",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write every figure here (e.g. out/multi_gpu.json)"
    )
    parser.add_argument(
        "--record", action="store_true", help="append the row to benchmarks/RESULTS.md"
    )
    return parser.parse_args(argv)


def recording(args) -> dict:
    """The generated recording (``gpu_speed.recording_files``: generated when missing)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_speed import recording_files

    ns = argparse.Namespace(
        preset=args.preset,
        duration=args.duration,
        seed=args.seed,
        workdir=args.workdir,
        gen_workers=args.gen_workers,
    )
    return recording_files(ns)


def command(args, rec: dict, rundir: Path, gpus: int) -> list[str]:
    config = [
        f"dat={rec['dat']}",
        f"probe={rec['probe']}",
        f"n_channels={rec['n_channels']}",
        f"sample_rate={rec['sample_rate']:g}",
        f"uv_per_bit={rec['uv_per_bit']:g}",
        f"device={args.device}",
        f"seed={args.seed}",
        f"scatter_blocks={args.blocks}",
        *args.config,
    ]
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(rundir),
        "--cores",
        str(args.cores),
        f"results/{rec['name']}/phy",
        "--resources",
        f"gpu={gpus}",
        "--config",
        *config,
    ]


def job_times(folder: Path) -> dict:
    """``{job name: (start, end, wall)}`` from the benchmark files (end = file mtime)."""
    out = {}
    for path in folder.glob("*.tsv"):
        with open(path) as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
        if row:
            end = path.stat().st_mtime
            wall = float(row["s"])
            out[path.stem] = (end - wall, end, wall)
    return out


def gpus_used(logs: Path) -> dict:
    """``{job name: GPU index}`` from the jobs' logs (the allocator's line)."""
    out = {}
    for log in logs.glob("*.log"):
        m = re.search(r"GPU (\d+) of \d+ taken", log.read_text(errors="replace"))
        if m:
            out[log.stem] = int(m.group(1))
    return out


def stage_figures(jobs: dict) -> dict:
    """Per stage: ``wall_s`` (one job, or the scattered stage's span from the first block job's
    start to the gather's end), ``jobs_s`` (sum of its jobs' walls) and ``n_jobs``."""
    out = {}
    for stage in STAGES:
        if stage in SCATTERED and stage not in jobs:
            block, gather = SCATTERED[stage]
            parts = [v for k, v in jobs.items() if k.startswith(block + ".") or k == gather]
            if parts:
                out[stage] = {
                    "wall_s": max(e for _, e, _ in parts) - min(s for s, _, _ in parts),
                    "jobs_s": sum(w for _, _, w in parts),
                    "n_jobs": len(parts),
                }
        elif stage in jobs:
            out[stage] = {"wall_s": jobs[stage][2], "jobs_s": jobs[stage][2], "n_jobs": 1}
    return out


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != "phy.log"
    ):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def run(args, rec: dict, gpus: int) -> dict:
    rundir = args.workdir.resolve() / f"run_gpu{gpus}"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    cmd = command(args, rec, rundir, gpus)
    print(f"gpu={gpus}:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    log = args.workdir.resolve() / f"snakemake_gpu{gpus}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    results = rundir / "results" / rec["name"]
    out = {"gpus": gpus, "command": cmd, "returncode": rc, "wall_s": wall, "log": str(log)}
    if rc != 0:
        print(f"gpu={gpus} FAILED (exit {rc}); last lines of {log}:", flush=True)
        print("".join(log.read_text(errors="replace").splitlines(True)[-40:]), flush=True)
        return out
    jobs = job_times(results / "benchmarks")
    out.update(
        jobs={k: {"start": s, "end": e, "wall_s": w} for k, (s, e, w) in jobs.items()},
        stages=stage_figures(jobs),
        gpu_of_job=gpus_used(results / "logs"),
        phy_digest=folder_digest(results / "phy"),
    )
    print(
        f"gpu={gpus}: done in {wall:.1f} s; GPUs used by the jobs: "
        f"{sorted(set(out['gpu_of_job'].values())) or 'as CUDA_VISIBLE_DEVICES said'}",
        flush=True,
    )
    return out


def kept_path(args, rec: dict, gpus: int) -> Path:
    return args.workdir.resolve() / f"figures_{rec['name']}_blocks{args.blocks}_gpu{gpus}.json"


def all_runs(args, rec: dict, fresh: list) -> list:
    """This call's runs and the kept ones of ``--compare``, by GPU count."""
    by_gpus = {r["gpus"]: r for r in fresh}
    for g in args.compare:
        path = kept_path(args, rec, g)
        if g not in by_gpus and path.is_file():
            by_gpus[g] = dict(json.loads(path.read_text()), kept=str(path))
    return [by_gpus[g] for g in sorted(by_gpus)]


def table(runs: list) -> str:
    ok = [r for r in runs if r.get("returncode") == 0]
    if not ok:
        return "no run finished"
    base = ok[0]
    head = (
        "| stage | " + " | ".join(f"gpu={r['gpus']} wall s (jobs s)" for r in ok) + " | speed-up |"
    )
    lines = [head, "|" + " --- |" * (len(ok) + 2)]
    for stage in STAGES:
        cells = []
        for r in ok:
            s = r["stages"].get(stage)
            cells.append(
                "" if s is None else f"{s['wall_s']:.1f} ({s['jobs_s']:.1f}, {s['n_jobs']} jobs)"
            )
        a, b = base["stages"].get(stage), ok[-1]["stages"].get(stage)
        speed = f"{a['wall_s'] / b['wall_s']:.2f}x" if a and b and b["wall_s"] > 0 else ""
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {speed} |")
    total = " | ".join(f"{r['wall_s']:.1f}" for r in ok)
    lines.append(f"| whole run (snakemake) | {total} | {base['wall_s'] / ok[-1]['wall_s']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rec = recording(args)
    fresh = []
    for g in args.gpus:
        fresh.append(run(args, rec, g))
        if fresh[-1].get("returncode") == 0:
            kept_path(args, rec, g).write_text(json.dumps(fresh[-1], indent=1, default=str))
    runs = all_runs(args, rec, fresh)
    text = table(runs)
    digests = {r["phy_digest"] for r in runs if r.get("returncode") == 0}
    same = len(digests) == 1
    print(
        f"\n{rec['name']}: scatter_blocks={args.blocks}, device={args.device}, "
        f"{platform.node()}\n{text}\nPhy folders identical across runs: {same}",
        flush=True,
    )
    speedups = {
        stage: runs[0]["stages"][stage]["wall_s"] / runs[-1]["stages"][stage]["wall_s"]
        for stage in SCATTERED
        if all(r.get("returncode") == 0 for r in runs)
        and stage in runs[0]["stages"]
        and stage in runs[-1]["stages"]
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "recording": {k: str(v) for k, v in rec.items()},
                    "blocks": args.blocks,
                    "runs": runs,
                    "table": text,
                    "scattered_speedup": speedups,
                    "phy_identical": same,
                },
                indent=1,
                default=str,
            )
        )
    if args.record and speedups:
        from results_table import append_row

        figure = ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
        append_row(
            "## Several GPUs",
            f"| {time.strftime('%Y-%m-%d')} | {platform.node()} | "
            f"`python benchmarks/multi_gpu.py --gpus {' '.join(map(str, args.gpus))} "
            f"--blocks {args.blocks}` | speed-up gpu={args.gpus[0]} -> "
            f"{args.gpus[-1]}: {figure}; Phy identical: {same} |\n",
        )
    ok = all(r.get("returncode") == 0 for r in fresh) and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
