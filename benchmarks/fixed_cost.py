"""Fixed cost of a sort: the same short recording sorted end to end with the stages run inside
the Snakemake process (``in_process=true``, the default) and each in its own interpreter
(``in_process=false``), and optionally by another checkout of kilosnake (``--baseline``, e.g.
the version before in-process stages), alternately, in one call.

    python benchmarks/fixed_cost.py                                  # CPU: the bundled demo
    python benchmarks/fixed_cost.py --preset np --duration 10 --device gpu --cores 16
    python benchmarks/fixed_cost.py --baseline ../kilosnake-old --repeats 3 --record
    python benchmarks/fixed_cost.py --baseline ../kilosnake-old --skip-own-interpreter

A baseline checkout runs its own Snakefile with its own ``kilosnake`` package first on
``PYTHONPATH``.

The recording is generated once (:func:`kilosnake.groundtruth.generate.generate`) into
``--workdir``; every sort runs ``snakemake --cores N`` in a fresh folder on it, so each is a
first sort of that recording (no output reused). Printed: wall time of each sort (the Snakemake
command, start to exit), the median per mode, and their difference: the per-job start-up that
in-process stages remove. ``--warmup`` sorts once first, unrecorded (on a GPU, compiles CuPy's
kernels into its cache).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_table import append_row

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config

REPO = Path(__file__).resolve().parents[1]


def modes(args) -> dict:
    """``{label: (checkout, extra config, PYTHONPATH first entry)}`` of the sorts compared."""
    found = {"in-process": (REPO, ["in_process=true"], None)}
    if not args.skip_own_interpreter:
        found["own interpreter"] = (REPO, ["in_process=false"], None)
    if args.baseline:
        found["baseline"] = (args.baseline.resolve(), [], args.baseline.resolve())
    return found


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--duration", type=float, default=None, help="seconds (preset's if unset)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2, help="sorts per mode")
    ap.add_argument("--warmup", action="store_true", help="one unrecorded sort first")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time too")
    ap.add_argument(
        "--skip-own-interpreter",
        action="store_true",
        help="time only in-process stages (and --baseline), not one interpreter per job",
    )
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--record", action="store_true", help="append the row to RESULTS.md")
    return ap.parse_args(argv)


def recording(args, folder: Path) -> dict:
    """The generated recording's paths and column count."""
    overrides = {} if args.duration is None else {"duration_s": float(args.duration)}
    config = preset_config(args.preset, **overrides)
    paths = generate(config, folder, name=f"{args.preset}_{config.duration_s:g}s", seed=0)
    return {
        "dat": paths.bin,
        "probe": paths.probe,
        "n_channels": config.n_channels_total,
        "duration_s": config.duration_s,
    }


def stage_seconds(run_dir: Path) -> dict:
    """``{rule: seconds}`` from the rules' ``benchmark:`` files of a sort."""
    found = {}
    for tsv in sorted(run_dir.glob("results/*/benchmarks/*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) >= 2:
            found[tsv.stem] = float(lines[1].split("\t")[0])
    return found


def sort_once(rec: dict, args, mode: tuple, root: Path) -> float:
    """Wall seconds of one sort of ``rec`` in a fresh folder under ``root`` (and its stages'
    seconds, printed)."""
    checkout, extra, path_first = mode
    run_dir = Path(tempfile.mkdtemp(prefix="sort-", dir=root))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"),
        "--directory", str(run_dir), "--cores", str(args.cores), "--quiet", "all",
        "--config", f"dat={rec['dat']}", f"probe={rec['probe']}",
        f"n_channels={rec['n_channels']}", f"device={args.device}", *extra,
    ]  # fmt: skip
    env = dict(os.environ)
    if path_first:
        env["PYTHONPATH"] = os.pathsep.join([str(path_first), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    done = subprocess.run(  # in the sort's folder: see cpu_speed.sort_kilosnake
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=run_dir
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"sort failed ({shlex.join(cmd)}):\n{done.stderr[-3000:]}")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in stage_seconds(run_dir).items())
    print(f"  stages s: {stages}", flush=True)
    return wall


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="fixed-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    rec = recording(args, root / "recording")
    compared = modes(args)
    if args.warmup:
        sort_once(rec, args, compared["in-process"], root)
    walls = {label: [] for label in compared}
    for _ in range(args.repeats):
        for label, mode in compared.items():  # alternately: a busy machine weighs on all alike
            walls[label].append(sort_once(rec, args, mode, root))
            print(f"{label}: {walls[label][-1]:.1f} s", flush=True)
    med = {label: statistics.median(w) for label, w in walls.items()}
    summary = ", ".join(f"{label} {s:.1f} s" for label, s in med.items())
    print(
        f"{args.preset} {rec['duration_s']:g} s, {rec['n_channels']} columns, device "
        f"{args.device}, --cores {args.cores} (median of {args.repeats}): {summary}"
    )
    figures = {"args": {k: str(v) for k, v in vars(args).items()}, "walls": walls, "median": med}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.record:
        append_row(
            "## Fixed cost of a sort (benchmarks/fixed_cost.py)",
            f"| {datetime.date.today()} | {platform.node()} | `python benchmarks/fixed_cost.py "
            f"{shlex.join(sys.argv[1:])}` | {summary} |",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
