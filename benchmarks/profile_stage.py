"""Where a stage spends its time: rerun one stage of a finished sort under cProfile.

    python benchmarks/profile_stage.py results/np learn --device gpu --sync
    python benchmarks/profile_stage.py results/demo final_pass --top 30

The stage reads the inputs the workflow already wrote under the results folder and writes its
output to a scratch folder (the results are not touched). With ``--sync`` CUDA kernels run
synchronously (``CUDA_LAUNCH_BLOCKING=1``), so GPU time is charged to the Python line that
launched it rather than to the next synchronisation; without it the wall time is the real one.
Prints the wall time and the functions with the largest own and cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: the stages this script can rerun (named like their rules)
STAGES = ("whitening", "preprocess", "drift", "drift_plot", "detect", "learn", "final_pass",
          "traces_plot", "merge", "split", "cutoff", "export_phy", "report")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a recording's results folder")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--device", default="gpu", choices=("cpu", "gpu"))
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sync", action="store_true", help="CUDA_LAUNCH_BLOCKING=1")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="wall time only")
    return parser.parse_args(argv)


def stage_parameters(stage: str, device: str, overrides: list[str]) -> dict:
    import kilosnake.params as kparams

    config = dict(item.split("=", 1) for item in overrides)
    config["device"] = device
    if stage == "report":
        return kparams.resolve(config)
    return kparams.resolve(config, kparams.rule_param_names(stage))  # the rule's params: p


def stage_call(stage: str, results: Path, p: dict, out: Path):
    """A zero-argument callable that runs ``stage`` on the stores in ``results``."""
    from kilosnake.curation import cutoff, merge, split
    from kilosnake.drift.detection import DetectionWhilePreprocessing
    from kilosnake.drift.estimate import run_drift
    from kilosnake.drift.plot import run_drift_plot
    from kilosnake.export.shanks import export_recording
    from kilosnake.preprocess.traces import run_preprocess
    from kilosnake.preprocess.whitening import run_whitening
    from kilosnake.report.build import write_report
    from kilosnake.report.traces import write_traces_picture
    from kilosnake.sorting import detect, final_pass, learn

    r = results
    drift_store = r / "drift.zarr" if (r / "drift.zarr").exists() else None
    calls = {
        "whitening": lambda: run_whitening(r / "input.json", p, out),
        "preprocess": lambda: run_preprocess(  # with the drift detections, as the workflow
            r / "input.json",
            r / "whitening.zarr",
            p,
            out,
            observer=DetectionWhilePreprocessing(r / "whitening.zarr", p["spkTh_drift"]),
        ),
        "drift": lambda: run_drift(r / "preprocessed.zarr", r / "whitening.zarr", out, p),
        "drift_plot": lambda: run_drift_plot(r / "drift.zarr", out.with_suffix(".png")),
        "detect": lambda: detect.run_detect(r / "preprocessed.zarr", out, p, drift_store),
        "learn": lambda: learn.run_learn(
            r / "preprocessed.zarr", r / "detect.zarr", out, p, drift_store
        ),
        "final_pass": lambda: final_pass.run_final_pass(
            r / "preprocessed.zarr", r / "templates.zarr", out, p, drift_store
        ),
        "traces_plot": lambda: write_traces_picture(
            r / "input.json",
            r / "preprocessed.zarr",
            r / "spikes.zarr",
            r / "templates.zarr",
            out.with_suffix(".png"),
        ),
        "merge": lambda: merge.run_merge(r / "spikes.zarr", r / "input.json", p, out),
        "split": lambda: split.run_split(
            r / "spikes.zarr",
            r / "templates.zarr",
            r / "merge.zarr",
            r / "input.json",
            p,
            out,
            workers=8,
        ),
        "cutoff": lambda: cutoff.run_cutoff(
            r / "spikes.zarr",
            r / "split.zarr",
            r / "whitening.zarr",
            r / "input.json",
            p,
            p["Th"],
            out,
            workers=8,
        ),
        "export_phy": lambda: export_recording(
            r / "spikes.zarr",
            r / "templates.zarr",
            r / "whitening.zarr",
            r / "input.json",
            r / "split.zarr",
            r / "cutoff.zarr",
            [],
            p,
            out.with_suffix(""),
        ),
        "report": lambda: write_report(
            out.with_suffix(".html"),
            r / "input.json",
            r / "phy",
            traces_plot=r / "traces.png",
            spikes=r / "spikes.zarr",
            drift=drift_store,
            drift_plot=r / "drift.png",
            input_check=r / "input_check.png",
            params=p,
        ),
    }
    return calls[stage]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sync:
        os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kilosnake.runtime.logs import add_default_handler

    add_default_handler("INFO")
    p = stage_parameters(args.stage, args.device, args.config)
    scratch = Path(tempfile.mkdtemp(prefix=f"profile-{args.stage}-"))
    call = stage_call(args.stage, args.results.resolve(), p, scratch / f"{args.stage}.zarr")
    profiler = None if args.no_profile else cProfile.Profile()
    t0 = time.perf_counter()
    try:
        if profiler:
            profiler.runcall(call)
        else:
            call()
    finally:
        wall = time.perf_counter() - t0
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{args.stage} on {args.device}{' (synchronous kernels)' if args.sync else ''}: "
        f"{wall:.2f} s wall"
    )
    if profiler:
        for key in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(args.top)
            print(f"--- by {key}\n" + "\n".join(text.getvalue().splitlines()[6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
