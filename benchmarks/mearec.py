"""MEArec benchmark: sort recordings built from biophysical templates and score them.

    python benchmarks/mearec.py --mearec-python /work/mearec_venv/bin/python \\
        --cache /work/cache/mearec --cores 2

Three presets, each 300 s on MEAutility's ``Neuropixels-64`` probe (64 contacts), seeded:

* ``mearec_static``: cells fire as Poisson processes, templates fixed;
* ``mearec_bursting``: every unit bursts: within a burst the amplitude decays from spike to spike
  and the waveform is stretched (MEArec's ``bursting``, ``exp_decay``, ``shape_mod``);
* ``mearec_drift``: MEArec's drifting templates move along the probe (slow triangular drift).

The templates are simulated once from the cell models MEArec ships (NEURON + LFPy; minutes) and
cached in ``--cache``; each recording is also cached there. Generation runs in an interpreter
with MEArec installed (``--mearec-python``; MEArec's own requirements clash with kilosnake's, so
it lives in its own virtual environment): this script re-invokes itself with ``generate`` there.
The generated recording is converted to what kilosnake sorts (a flat int16 binary, a
probeinterface JSON, a ``<name>_gt.npz`` ground truth and a ``<name>.meta.json``), sorted with the
workflow (Snakemake in a subprocess, up to the Phy folder), and the Phy folder is scored with
:func:`kilosnake.groundtruth.score.score_phy_folder`, the scorer of the workflow's scorecard.
A row is printed and appended to ``benchmarks/RESULTS.md``.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## MEArec recordings (benchmarks/mearec.py: biophysical templates, Phy folder scored)"
PRESETS = ("mearec_static", "mearec_bursting", "mearec_drift")

#: the probe every preset uses (an MEAutility model)
PROBE = "Neuropixels-64"
#: templates simulated per cell model (13 models ship with MEArec)
TEMPLATES_PER_CELL = 8
#: positions along the drift path of each drifting template
DRIFT_STEPS = 31
#: µV per bit of the int16 file
UV_PER_BIT = 0.5
SAMPLE_RATE = 32000.0  # the templates' 1/dt (dt = 2**-5 ms), kept as is


# --------------------------------------------------------------------------------------------
# the presets (MEArec parameter overrides)


def templates_params(seed: int) -> dict:
    """Overrides of MEArec's template defaults: the probe, a small drifting library."""
    return {
        "probe": PROBE,
        "n": TEMPLATES_PER_CELL,
        "seed": seed,
        "drifting": True,
        "drift_steps": DRIFT_STEPS,
        "min_amp": 30,
    }


def recording_params(preset: str, seed: int, duration_s: float) -> dict:
    """Overrides of MEArec's recording defaults for ``preset``."""
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recordings = {
        "fs": SAMPLE_RATE,
        "noise_level": 10.0,
        "noise_mode": "distance-correlated",
        "noise_half_distance": 30,
        "filter": True,
        "filter_cutoff": [300, 6000],
        "modulation": "electrode",
        "sdrand": 0.05,
        "chunk_duration": 10,
        "drifting": False,
        "bursting": False,
    }
    if preset == "mearec_bursting":
        recordings.update(
            bursting=True,
            exp_decay=0.2,
            n_burst_spikes=10,
            max_burst_duration=100,
            shape_mod=True,
            shape_stretch=30.0,
        )
    if preset == "mearec_drift":
        recordings.update(
            drifting=True,
            drift_mode_speed="slow",
            drift_mode_probe="rigid",
            slow_drift_velocity=10.0,
            slow_drift_amplitude=30.0,
            slow_drift_waveform="triangluar",
            preferred_dir=[0, 0, 1],
            angle_tol=30,
        )
    spiketrains = {
        "n_exc": 15,
        "n_inh": 10,
        "f_exc": 5,
        "f_inh": 15,
        "st_exc": 2,
        "st_inh": 5,
        "min_rate": 1.0,
        "ref_per": 2,
        "duration": duration_s,
    }
    return {
        "spiketrains": spiketrains,
        "templates": {"min_dist": 20, "min_amp": 50, "max_amp": 300},
        "recordings": recordings,
        "seeds": {
            "spiketrains": seed,
            "templates": seed + 1,
            "convolution": seed + 2,
            "noise": seed + 3,
        },
    }


# --------------------------------------------------------------------------------------------
# generation (runs in the MEArec interpreter)


def template_library(cache: Path, seed: int, n_jobs: int) -> Path:
    """The cached template library (simulated with NEURON on first use)."""
    import MEArec as mr

    path = cache / f"templates_{PROBE}_n{TEMPLATES_PER_CELL}_drift{DRIFT_STEPS}_seed{seed}.h5"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tempgen = mr.gen_templates(
        mr.get_default_cell_models_folder(),
        params=with_defaults(mr.get_default_templates_params(), templates_params(seed)),
        templates_tmp_folder=str(cache / "tmp_templates"),
        parallel=n_jobs > 1,
        n_jobs=n_jobs,
        verbose=True,
    )
    tmp = path.with_name(path.name + ".tmp.h5")
    mr.save_template_generator(tempgen, str(tmp))
    tmp.replace(path)
    print(f"template library {path} built in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def generate_command(argv=None) -> int:
    """``generate`` sub-command: write a preset's recording (int16 binary + spike trains)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("generate")
    parser.add_argument("--preset", default=PRESETS[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--templates-only", action="store_true")
    args = parser.parse_args(argv)
    library = template_library(args.cache, args.seed, args.n_jobs)
    if args.templates_only:
        return 0
    import MEArec as mr

    files = generated_files(args.cache, recording_name(args.preset, args.seed, args.duration))
    if files["bin"].exists() and files["mearec"].exists():
        print(f"recording {files['bin']} exists", flush=True)
        return 0
    t0 = time.perf_counter()
    recgen = mr.gen_recordings(
        templates=str(library),
        params=with_defaults(
            mr.get_default_recordings_params(),
            recording_params(args.preset, args.seed, args.duration),
        ),
        n_jobs=args.n_jobs,
        verbose=True,
        tmp_folder=str(args.cache / "tmp_recordings"),
    )
    write_generated(recgen, files)
    print(f"recording {files['bin']} generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def with_defaults(defaults: dict, overrides: dict) -> dict:
    """MEArec's default parameters with ``overrides`` (nested dicts updated key by key)."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_defaults(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_generated(recgen, files: dict) -> None:
    """The traces as int16 (UV_PER_BIT µV per bit) and MEArec's truth as a plain .npz."""
    import numpy as np

    traces = recgen.recordings  # (n_samples, n_channels) µV
    positions = np.asarray(recgen.channel_positions, dtype=np.float64)
    if traces.shape[1] != positions.shape[0]:
        raise RuntimeError(
            f"unexpected trace layout {traces.shape} for {positions.shape[0]} contacts"
        )
    fs = float(recgen.info["recordings"]["fs"])
    tmp = files["bin"].with_name(files["bin"].name + ".tmp")
    clipped = 0
    with open(tmp, "wb") as fh:
        step = int(fs) * 10
        for start in range(0, traces.shape[0], step):
            block = np.round(np.asarray(traces[start : start + step], np.float64) / UV_PER_BIT)
            clipped += int(np.count_nonzero(np.abs(block) > 32767))
            np.clip(block, -32768, 32767).astype("<i2").tofile(fh)
    times = [
        np.round(st.times.rescale("s").magnitude * fs).astype(np.int64) for st in recgen.spiketrains
    ]
    units = [np.full(t.size, i, np.int64) for i, t in enumerate(times)]
    drift = {}
    if recgen.drift_list:
        d = recgen.drift_list[0]
        drift = {
            "drift_vector_um": np.asarray(d["drift_vector_um"], np.float64),
            "drift_fs": np.float64(d["drift_fs"]),
        }
    arrays = dict(
        spike_samples=np.concatenate(times) if times else np.zeros(0, np.int64),
        spike_units=np.concatenate(units) if units else np.zeros(0, np.int64),
        channel_positions=positions,
        sample_rate=np.float64(fs),
        uv_per_bit=np.float64(UV_PER_BIT),
        n_samples=np.int64(traces.shape[0]),
        clipped_samples=np.int64(clipped),
        template_locations=np.asarray(recgen.template_locations, np.float64),
        cell_types=np.asarray([str(c) for c in recgen.template_celltypes]),
        bursting=np.asarray(
            [bool(st.annotations.get("bursting", False)) for st in recgen.spiketrains]
        ),
        snr_mearec=np.asarray(
            [float(st.annotations.get("snr", np.nan)) for st in recgen.spiketrains]
        ),
        **drift,
    )
    npz_tmp = files["mearec"].with_name(files["mearec"].name + ".tmp.npz")
    np.savez(npz_tmp, **arrays)
    npz_tmp.replace(files["mearec"])
    tmp.replace(files["bin"])


def recording_name(preset: str, seed: int, duration_s: float) -> str:
    return f"{preset}_{duration_s:g}s_seed{seed}"


def generated_files(cache: Path, name: str) -> dict:
    """The files of one recording in the cache: what MEArec wrote and what kilosnake reads."""
    return {
        "bin": cache / f"{name}.bin",
        "mearec": cache / f"{name}_mearec.npz",
        "probe": cache / f"{name}.probe.json",
        "gt": cache / f"{name}_gt.npz",
        "meta": cache / f"{name}.meta.json",
    }


# --------------------------------------------------------------------------------------------
# conversion to kilosnake's inputs (runs in kilosnake's interpreter)


#: window around a spike used to find its trough and the unit's SNR (samples each side)
WAVEFORM_HALF_WIDTH = 64
#: spikes per unit averaged for the trough alignment and the SNR (from the recording's start)
WAVEFORM_SPIKES = 200
#: seconds at the recording's start from which those spikes are taken (before drift moves them)
WAVEFORM_WINDOW_S = 30.0


def convert_for_kilosnake(files: dict, preset: str, seed: int) -> dict:
    """Write the probe JSON, the ground truth and the metadata kilosnake's tools read."""
    import numpy as np

    from kilosnake.io.probe import Probe, write_probeinterface_json

    with np.load(files["mearec"]) as data:
        mr = {k: data[k] for k in data.files}
    fs = float(mr["sample_rate"])
    positions = mr["channel_positions"]
    n_channels = positions.shape[0]
    # MEArec's probes lie in the y-z plane, z along the shank (the drift direction)
    probe = Probe(
        chan_map=np.arange(n_channels),
        xc=positions[:, 1],
        yc=positions[:, 2],
        kcoords=np.zeros(n_channels),
        n_channels_total=n_channels,
        name=PROBE,
    )
    write_probeinterface_json(probe, files["probe"])
    traces = np.memmap(files["bin"], dtype="<i2", mode="r").reshape(-1, n_channels)
    noise_sd = robust_noise_sd(traces, fs)
    times, units = mr["spike_samples"], mr["spike_units"]
    n_units = int(units.max()) + 1 if units.size else 0
    shift = np.zeros(n_units, np.int64)
    snr = np.zeros(n_units)
    peak = np.zeros(n_units, np.int64)
    for u in range(n_units):
        shift[u], snr[u], peak[u] = trough_shift_and_snr(traces, times[units == u], noise_sd, fs)
    gt_times = times + shift[units]
    order = np.argsort(gt_times, kind="stable")
    n_samples = traces.shape[0]
    arrays = dict(
        spike_times=gt_times[order].astype(np.uint64),
        spike_units=units[order].astype(np.int64),
        snr=snr,
        snr_mearec=mr["snr_mearec"],
        peak_channel=peak,
        trough_shift_samples=shift,
        n_spikes=np.bincount(units, minlength=n_units).astype(np.int64),
        firing_rate=np.bincount(units, minlength=n_units) / (n_samples / fs),
        noise_sd=noise_sd,
        channel_positions=np.column_stack([probe.xc, probe.yc]),
        unit_positions=mr["template_locations"].reshape(n_units, -1, 3)[:, 0, :],
        bursting=mr["bursting"],
        cell_types=mr["cell_types"],
        sample_rate=np.float64(fs),
    )
    if "drift_vector_um" in mr:
        vector = mr["drift_vector_um"]
        arrays["drift_times_s"] = np.arange(vector.size) / float(mr["drift_fs"])
        arrays["drift_um"] = vector[:, None]
    np.savez(files["gt"], **arrays)
    meta = {
        "name": files["bin"].stem,
        "generator": "MEArec (benchmarks/mearec.py)",
        "preset": preset,
        "seed": seed,
        "probe": PROBE,
        "sample_rate": fs,
        "n_channels_total": n_channels,
        "n_channels": n_channels,
        "dtype": "int16",
        "uv_per_bit": float(mr["uv_per_bit"]),
        "duration_s": n_samples / fs,
        "n_samples": int(n_samples),
        "n_units": n_units,
        "n_spikes": int(times.size),
        "clipped_samples": int(mr["clipped_samples"]),
        "trough_shift_samples": [int(v) for v in shift],
    }
    files["meta"].write_text(json.dumps(meta, indent=1))
    return meta


def robust_noise_sd(traces, fs: float):
    """Per-channel noise SD (median absolute deviation / 0.6745) over 10 s of the recording."""
    import numpy as np

    block = np.asarray(traces[: int(10 * fs)], np.float64)
    return np.median(np.abs(block - np.median(block, axis=0)), axis=0) / 0.6745


def trough_shift_and_snr(traces, unit_times, noise_sd, fs: float):
    """How far (samples) the unit's mean trough on its peak channel lies from MEArec's spike
    time, the unit's SNR (that trough over the channel's noise SD) and its peak channel.

    The mean is taken over the unit's first spikes (at most WAVEFORM_SPIKES within
    WAVEFORM_WINDOW_S of the start, so that drift has not moved it yet).
    """
    import numpy as np

    h = WAVEFORM_HALF_WIDTH
    t = unit_times[
        (unit_times >= h) & (unit_times < min(traces.shape[0] - h, WAVEFORM_WINDOW_S * fs))
    ]
    t = t[:WAVEFORM_SPIKES]
    if t.size == 0:
        return 0, float("nan"), -1
    mean = np.mean([np.asarray(traces[s - h : s + h + 1], np.float64) for s in t], axis=0)
    peak = int(mean.min(axis=0).argmin())
    lag = int(mean[:, peak].argmin()) - h
    snr = float(-mean[h + lag, peak] / noise_sd[peak])
    return lag, snr, peak


# --------------------------------------------------------------------------------------------
# sorting and scoring


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument(
        "--mearec-python",
        default=os.environ.get("MEAREC_PYTHON", sys.executable),
        help="interpreter with MEArec, NEURON and LFPy (only needed to generate); default: "
        "$MEAREC_PYTHON, else this one (with the mearec extra)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("MEAREC_CACHE", Path.home() / ".cache" / "kilosnake-mearec")),
        help="folder of the template library and the generated recordings (reused)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the templates and recordings")
    parser.add_argument("--duration", type=float, default=300.0, help="recording length (s)")
    parser.add_argument("--cores", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    parser.add_argument("--n-jobs", type=int, default=1, help="MEArec's worker processes")
    parser.add_argument(
        "--config", nargs="*", default=[], metavar="KEY=VALUE", help="extra workflow --config"
    )
    parser.add_argument(
        "--rerun", action="store_true", help="sort again even if a Phy folder exists"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    return parser.parse_args(argv)


def ensure_recording(args, preset: str) -> tuple[dict, dict]:
    """Generate (in the MEArec interpreter) and convert the preset's recording if missing."""
    name = recording_name(preset, args.seed, args.duration)
    files = generated_files(args.cache, name)
    if not (files["bin"].exists() and files["mearec"].exists()):
        command = [
            args.mearec_python,
            str(Path(__file__).resolve()),
            "generate",
            f"--preset={preset}",
            f"--cache={args.cache}",
            f"--seed={args.seed}",
            f"--duration={args.duration}",
            f"--n-jobs={args.n_jobs}",
        ]
        print("generating:", " ".join(shlex.quote(c) for c in command), flush=True)
        env = dict(os.environ)
        env["PATH"] = f"{Path(args.mearec_python).parent}{os.pathsep}{env.get('PATH', '')}"
        done = subprocess.run(command, env=env)
        if done.returncode != 0:
            raise SystemExit(
                f"MEArec generation failed (exit {done.returncode}); is MEArec installed in "
                f"{args.mearec_python}? (see the README's MEArec section)"
            )
    if not (files["gt"].exists() and files["meta"].exists() and files["probe"].exists()):
        convert_for_kilosnake(files, preset, args.seed)
    return files, json.loads(files["meta"].read_text())


def workflow_command(args, files: dict, meta: dict) -> list[str]:
    """The Snakemake command that sorts the recording up to its Phy folder."""
    config = [
        f"dat={files['bin']}",
        f"probe={files['probe']}",
        f"n_channels={meta['n_channels_total']}",
        f"sample_rate={meta['sample_rate']:g}",
        f"uv_per_bit={meta['uv_per_bit']:g}",
        f"device={args.device}",
        *args.config,
    ]
    rerun = ["--forcerun", "check_input"] if args.rerun else []
    target = f"results/{files['bin'].stem}/phy"
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        str(args.cores),
        target,
        *rerun,
        "--config",
        *config,
    ]


def good_units(phy: Path) -> int:
    """Clusters labelled good in the Phy folder (cluster_group.tsv, else cluster_KSLabel.tsv)."""
    for name in ("cluster_group.tsv", "cluster_KSLabel.tsv"):
        path = phy / name
        if path.exists():
            rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
            return sum(1 for r in rows if len(r) > 1 and r[1].strip() == "good")
    return 0


def figures_text(preset: str, meta: dict, result, n_good: int, wall: float) -> str:
    """The headline figures of one scored recording."""
    s = result.summary
    n_gt = s["n_gt_units"]
    snr = [u for u in result.per_unit if u["snr"] >= 5]
    snr_well = sum(1 for u in snr if u["accuracy"] >= s["well_detected_accuracy"])
    n_bursting = meta.get("n_bursting")
    return (
        f"{preset} ({meta['n_channels']} ch {PROBE}, {meta['duration_s']:.0f} s, {n_gt} units"
        + (f", {n_bursting} bursting" if n_bursting else "")
        + f"): {s['n_well_detected']} / {n_gt} well detected (acc >= 0.8), "
        f"SNR >= 5: {snr_well} / {len(snr)} well detected; "
        f"{s['n_sorted_units']} Phy clusters (not noise), {n_good} good; "
        f"{s['n_false_positive']} false-positive, {s['n_redundant']} redundant, "
        f"{s['n_overmerged']} overmerged; mean accuracy {s['mean_accuracy']:.3f}; "
        f"sort wall {wall:.0f} s"
    )


def machine_label(device: str) -> str:
    return f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}), device={device}"


def results_row(args, figures: str) -> str:
    cmd = " ".join(shlex.quote(c) for c in ["python", "benchmarks/mearec.py", *sys.argv[1:]])
    date = datetime.date.today().isoformat()
    return f"| {date} | {machine_label(args.device)} | `{cmd}` | {figures} |\n"


def sort_and_score(args, preset: str) -> str:
    from kilosnake.groundtruth.score import score_phy_folder

    files, meta = ensure_recording(args, preset)
    with __import__("numpy").load(files["gt"]) as gt:
        meta["n_bursting"] = int(gt["bursting"].sum())
    phy = ROOT / "results" / files["bin"].stem / "phy"
    command = workflow_command(args, files, meta)
    print("running:", " ".join(shlex.quote(c) for c in command), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"workflow failed on {preset} (exit {done.returncode})")
    result = score_phy_folder(phy, files["gt"])
    (phy.parent / "mearec_scorecard.txt").write_text(result.to_text())
    print(result.to_text())
    return figures_text(preset, meta, result, good_units(phy), wall)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.cache = args.cache.resolve()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from results_table import append_row

    for preset in args.preset:
        figures = sort_and_score(args, preset)
        print(figures, flush=True)
        if not args.no_record:
            append_row(SECTION, results_row(args, figures))
            print("appended a row to benchmarks/RESULTS.md", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        raise SystemExit(generate_command(sys.argv[1:]))
    raise SystemExit(main())
