"""CPU speed against MountainSort 5: one generated recording sorted by kilosnake and by
MountainSort 5 (through SpikeInterface's ``run_sorter``, its defaults) in one call.

    python3 -m venv ms5 && ms5/bin/pip install mountainsort5 spikeinterface probeinterface
    python benchmarks/cpu_speed.py --ms5-python ms5/bin/python      # small preset: 32 ch, 300 s
    python benchmarks/cpu_speed.py --ms5-python ms5/bin/python --duration 60 --record
    python benchmarks/cpu_speed.py --ms5-python ms5/bin/python --baseline ../kilosnake-old

MountainSort 5 runs in an environment of its own: SpikeInterface pins zarr 2 (on Python < 3.14)
while kilosnake's stores are zarr 3.

Steps: the preset's recording is generated into ``--workdir`` (not timed); kilosnake sorts it
with ``snakemake --cores N`` (device=cpu) to its Phy folder in a fresh folder; MountainSort 5
sorts the same file (read with ``spikeinterface.read_binary``, the probe from its JSON) in a
child process. For each: wall time from start to exit, peak resident memory of the process tree
(``wait4``), and accuracy against the ground truth (matched within 0.4 ms,
:func:`kilosnake.groundtruth.score.score_spike_trains`): well-detected, false-positive and
redundant units. ``--baseline`` sorts it with another checkout of kilosnake too (before and after
a change, on the same machine load). ``--record`` appends the row to RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_table import append_row

from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.groundtruth.score import score_phy_folder, score_spike_trains
from kilosnake.groundtruth.truth import load_ground_truth

REPO = Path(__file__).resolve().parents[1]

#: the child that runs MountainSort 5 (its imports stay out of this process)
MS5_CHILD = """
import json, sys
import numpy as np
import probeinterface
import spikeinterface as si
import spikeinterface.sorters as ss
rec_info = json.loads(sys.argv[1])
recording = si.read_binary(rec_info["dat"], sampling_frequency=rec_info["sample_rate"],
                           dtype="int16", num_channels=rec_info["n_channels"])
probe = probeinterface.read_probeinterface(rec_info["probe"])
recording = recording.set_probegroup(probe, in_place=False) or recording
sorting = ss.run_sorter("mountainsort5", recording, folder=rec_info["folder"],
                        remove_existing_folder=True, verbose=False)
times, units = [], []
for u in sorting.get_unit_ids():
    t = sorting.get_unit_spike_train(u)
    times.append(t); units.append(np.full(t.size, int(u)))
np.savez(rec_info["out"], times=np.concatenate(times) if times else np.zeros(0),
         units=np.concatenate(units) if units else np.zeros(0))
"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-ms5", action="store_true")
    ap.add_argument(
        "--baseline", type=Path, default=None, help="another kilosnake checkout to time too"
    )
    ap.add_argument(
        "--ms5-python", default=sys.executable, help="Python of an environment with mountainsort5"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--record", action="store_true", help="append the row to RESULTS.md")
    return ap.parse_args(argv)


def timed(cmd: list, env=None, log: Path | None = None, cwd=None) -> tuple[float, float]:
    """Run ``cmd``; return its wall seconds and the peak RSS (GB) of its process tree."""
    out = open(log, "w") if log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        tail = log.read_text()[-3000:] if log else ""
        raise SystemExit(f"failed ({shlex.join(map(str, cmd))}):\n{tail}")
    return wall, usage.ru_maxrss / 1e6  # kB -> GB (the largest process of the tree)


def recording(args, folder: Path) -> dict:
    config = preset_config(args.preset, duration_s=args.duration)
    name = f"{args.preset}_{config.duration_s:g}s_seed{args.seed}"
    paths = generate(config, folder, name=name, seed=args.seed)
    return {
        "dat": str(paths.bin),
        "probe": str(paths.probe),
        "gt": str(paths.gt),
        "n_channels": config.n_channels_total,
        "sample_rate": config.sample_rate,
        "name": name,
    }


def sort_kilosnake(rec: dict, args, root: Path, checkout: Path = REPO, label="kilosnake") -> dict:
    """Sort ``rec`` with the workflow of ``checkout`` (its own package first on PYTHONPATH when
    it is not this one)."""
    run_dir = root / label
    env = dict(os.environ)
    if checkout != REPO:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"),
        "--directory", str(run_dir), "--cores", str(args.cores), f"results/{rec['name']}/phy",
        "--config", f"dat={rec['dat']}", f"probe={rec['probe']}",
        f"n_channels={rec['n_channels']}", "device=cpu", f"seed={args.seed}",
    ]  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    # run in the sort's folder: ``python -m`` puts the working folder first on sys.path, where
    # this checkout's package would shadow the baseline's
    wall, rss = timed(cmd, env=env, log=root / f"{label}.log", cwd=run_dir)
    score = score_phy_folder(run_dir / "results" / rec["name"] / "phy", rec["gt"])
    return {"wall_s": wall, "peak_rss_gb": rss, "summary": score.summary}


def sort_ms5(rec: dict, root: Path, python: str) -> dict:
    out = root / "ms5_spikes.npz"
    info = {**rec, "folder": str(root / "ms5"), "out": str(out)}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wall, rss = timed([python, "-c", MS5_CHILD, json.dumps(info)], env=env, log=root / "ms5.log")
    with np.load(out) as f:
        times, units = f["times"].astype(np.uint64), f["units"].astype(np.int64)
    gt = load_ground_truth(rec["gt"])
    order = np.argsort(times, kind="stable")
    score = score_spike_trains(
        gt.times, gt.units, times[order], units[order], rec["sample_rate"], gt_snr=gt.snr
    )
    return {"wall_s": wall, "peak_rss_gb": rss, "summary": score.summary}


def accuracy_text(summary: dict) -> str:
    return (
        f"{summary['n_well_detected']} / {summary['n_gt_units']} well detected, "
        f"{summary['n_false_positive']} FP, {summary['n_redundant']} redundant"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="cpu-speed-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rec = recording(args, root / "recording")
    figures = {"kilosnake": sort_kilosnake(rec, args, root)}
    if args.baseline:
        figures["baseline"] = sort_kilosnake(rec, args, root, args.baseline.resolve(), "baseline")
    if not args.skip_ms5:
        figures["mountainsort5"] = sort_ms5(rec, root, args.ms5_python)
    lines = [
        f"{name}: {f['wall_s']:.1f} s, peak RSS {f['peak_rss_gb']:.2f} GB, "
        f"{accuracy_text(f['summary'])}"
        for name, f in figures.items()
    ]
    print(f"{rec['name']} ({rec['n_channels']} columns), --cores {args.cores}")
    print("\n".join(lines))
    if "mountainsort5" in figures:
        ratio = figures["kilosnake"]["wall_s"] / figures["mountainsort5"]["wall_s"]
        print(f"kilosnake wall / MountainSort 5 wall: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    if args.record:
        append_row(
            "## CPU speed vs MountainSort 5 (benchmarks/cpu_speed.py)",
            f"| {datetime.date.today()} | {platform.node()} ({os.cpu_count()} CPUs) | "
            f"`python benchmarks/cpu_speed.py {shlex.join(sys.argv[1:])}` | "
            + "; ".join(lines)
            + " |\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
