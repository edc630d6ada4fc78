"""Peak memory of the stages after the final pass on a long sort made by repeating a short one.

    python benchmarks/memory_tiled.py --results /tmp/kilosnake-memory/results/small_10min \\
        --times 12 --dat /tmp/kilosnake-memory/recordings/small_120min.bin

The final pass's output of a finished sort (``spikes.zarr``) is repeated ``--times`` times end to
end (times shifted by the recording's length, batches by its batch count), which gives the spike
count of a recording ``--times`` times longer without sorting it. Merge, split, cutoff, Phy export,
QC report and scorecard then run on the short and on the repeated sort, each in its own process
under ``/usr/bin/time -v``; the table gives every stage's peak resident memory for both. ``--dat``
is a raw file of the long length (the export checks the file size; Phy reads waveforms from it),
``--gt`` its ground truth for the scorecard (by default ``<dat stem>_gt.npz``).

This is a proxy for the curation and export stages only: the sorting stages are measured on real
recordings by ``benchmarks/memory.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from memory import TIME, parse_time_v  # noqa: E402

STAGES = ("merge", "split", "cutoff", "export_phy", "report", "scorecard")
COPIED = ("templates.zarr", "whitening.zarr")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        required=True,
        help="results folder of a finished sort (spikes.zarr, templates.zarr, "
        "whitening.zarr, input.json)",
    )
    parser.add_argument("--times", type=int, default=12, help="repeats (default 12)")
    parser.add_argument(
        "--dat", type=Path, required=True, help="raw file as long as the repeated sort"
    )
    parser.add_argument("--gt", type=Path, default=None, help="ground truth of --dat")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the runs go (default: beside --results)"
    )
    return parser.parse_args(argv)


def tile_spikes(src: Path, out: Path, times: int, n_samples: int, n_batches: int) -> int:
    """Write ``spikes.zarr`` repeated ``times`` times at ``out``; return the spike count."""
    from kilosnake.io.store import AppendableArray, open_store, write_array, writing_store

    g = open_store(src)
    per_spike = (
        "time",
        "template",
        "amplitude",
        "score",
        "batch",
        "template_features",
        "pc_features",
    )
    attrs = {k: v for k, v in g.attrs.items() if k not in ("complete",)}
    attrs["n_samples"] = int(attrs.get("n_samples", n_samples)) * times
    with writing_store(
        out,
        "final_pass",
        attrs.get("params", {}),
        attrs.get("device", "cpu"),
        attrs.get("seed"),
        attrs,
    ) as w:
        columns = {
            name: AppendableArray(w, name, g[name].shape[1:], g[name].dtype) for name in per_spike
        }
        for k in range(times):
            for name, arr in columns.items():
                for s in range(0, g[name].shape[0], 1 << 16):
                    block = np.asarray(g[name][s : s + (1 << 16)])
                    if name == "time":
                        block = block + np.uint64(k * n_samples)
                    elif name == "batch":
                        block = block + np.uint32(k * n_batches)
                    arr.append(block)
        for name in ("template_feature_ind", "pc_feature_ind", "similar_templates"):
            write_array(w, name, np.asarray(g[name][...]))
        w.attrs["n_spikes"] = int(columns["time"].n)
    return int(columns["time"].n)


def make_tiled(results: Path, folder: Path, times: int, dat: Path) -> Path:
    """A results folder holding the repeated sort (and ``input.json`` of the long recording)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = json.loads((results / "input.json").read_text())
    if not (folder / "spikes.zarr").exists():
        n = tile_spikes(
            results / "spikes.zarr",
            folder / "spikes.zarr",
            times,
            int(info["n_samples"]),
            int(info["n_batches"]),
        )
        print(f"repeated {results / 'spikes.zarr'} {times} times: {n} spikes", flush=True)
    for name in COPIED:
        if not (folder / name).exists():
            shutil.copytree(results / name, folder / name)
    long = dict(
        info,
        dat=str(dat),
        n_samples=int(info["n_samples"]) * times,
        duration_s=float(info["duration_s"]) * times,
        n_batches=int(info["n_batches"]) * times,
    )
    (folder / "input.json").write_text(json.dumps(long, indent=1))
    return folder


def stage_code(stage: str, d: Path, gt: Path | None) -> str:
    """Python that runs one stage on the stores of ``d`` (default parameters, CPU)."""
    p = "from kilosnake.params import resolve; p = resolve({'device': 'cpu'}); "
    s = {
        k: repr(str(d / f))
        for k, f in (
            ("spikes", "spikes.zarr"),
            ("templates", "templates.zarr"),
            ("whitening", "whitening.zarr"),
            ("info", "input.json"),
            ("merge", "merge.zarr"),
            ("split", "split.zarr"),
            ("cutoff", "cutoff.zarr"),
            ("phy", "phy"),
            ("html", "report.html"),
            ("card", "scorecard.txt"),
        )
    }
    return {
        "merge": p + "from kilosnake.curation.merge import run_merge; "
        f"run_merge({s['spikes']}, {s['info']}, p, {s['merge']})",
        "split": p + "from kilosnake.curation.split import run_split; "
        f"run_split({s['spikes']}, {s['templates']}, {s['merge']}, {s['info']}, p, "
        f"{s['split']})",
        "cutoff": p + "from kilosnake.curation.cutoff import run_cutoff; "
        f"run_cutoff({s['spikes']}, {s['split']}, {s['whitening']}, {s['info']}, "
        f"p, p['Th'], {s['cutoff']})",
        "export_phy": p + "from kilosnake.export.writer import export_phy; "
        f"export_phy({s['spikes']}, {s['templates']}, {s['whitening']}, "
        f"{s['info']}, {s['split']}, {s['cutoff']}, p, {s['phy']})",
        "report": p + "from kilosnake.report.build import write_report; "
        f"write_report({s['html']}, {s['info']}, {s['phy']}, "
        f"spikes={s['spikes']}, params=p)",
        "scorecard": "from kilosnake.groundtruth.score import write_scorecard; "
        f"write_scorecard({s['phy']}, {str(gt)!r}, {s['card']})",
    }[stage]


def run_stages(folder: Path, gt: Path | None) -> dict:
    """``{stage: peak MB}`` of every stage run on ``folder`` (each in a fresh process)."""
    peaks = {}
    for stage in STAGES:
        if stage == "scorecard" and (gt is None or not gt.exists()):
            continue
        report = folder / f"{stage}.time-v.txt"
        subprocess.run(
            [
                TIME,
                "-v",
                "-o",
                str(report),
                sys.executable,
                "-c",
                "import logging; logging.basicConfig(level=logging.WARNING); "
                + stage_code(stage, folder, gt),
            ],
            check=True,
            cwd=ROOT,
        )
        peaks[stage] = parse_time_v(report.read_text()) / 1024
        print(f"{folder.name} {stage}: {peaks[stage]:.0f} MB", flush=True)
    return peaks


def spike_count(folder: Path) -> int:
    from kilosnake.io.store import open_store

    return int(open_store(folder / "spikes.zarr")["time"].shape[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    results = args.results.resolve()
    workdir = (args.workdir or results.parent / f"{results.name}_x{args.times}").resolve()
    gt = args.gt or args.dat.with_name(f"{args.dat.stem}_gt.npz")
    short_gt = results.parents[1] / "recordings" / f"{results.name}_gt.npz"
    short = workdir / "short"
    short.mkdir(parents=True, exist_ok=True)
    for name in ("spikes.zarr",) + COPIED:
        if not (short / name).exists():
            shutil.copytree(results / name, short / name)
    shutil.copy(results / "input.json", short / "input.json")
    long = make_tiled(results, workdir / "long", args.times, args.dat.resolve())
    peaks = {"short": run_stages(short, short_gt), "long": run_stages(long, gt)}
    n_short, n_long = spike_count(short), spike_count(long)
    print(
        f"\npeak resident memory (MB, /usr/bin/time -v) per stage: {n_short} spikes vs "
        f"{n_long} spikes ({args.times} x)\n"
    )
    print("| stage | short | long | long / short |\n| --- | --- | --- | --- |")
    for stage in STAGES:
        a, b = peaks["short"].get(stage), peaks["long"].get(stage)
        if a and b:
            print(f"| {stage} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
