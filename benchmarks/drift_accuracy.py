"""Drift benchmark: estimated vs true displacement, kriging kernels, cost of correcting on read.

    python benchmarks/drift_accuracy.py                       # drift presets, nblocks 1 and 5
    python benchmarks/drift_accuracy.py --presets drift --duration 40 --nblocks 1
    python benchmarks/drift_accuracy.py --kernels             # exponential vs Gaussian kriging
    python benchmarks/drift_accuracy.py --read-cost --channels 384 --seconds 20

Accuracy: each preset of :mod:`kilosnake.groundtruth.generate` is generated (once) under
``resources/benchmark/drift/``, whitened and preprocessed, and the drift stage's estimate is
compared with the ground truth: the true displacement is averaged over each batch at the block
centres, and the RMS difference is taken after removing the mean difference (the estimate is
relative to a reference position). Kernels: whitened footprints of synthetic units moved by
2.5-15 µm are moved back with each kriging kernel; the relative waveform error and the variance
left of white noise are printed. Read cost: seconds per pass over a whitened-noise recording
for the plain reader, the drift-corrected reader, and writing a corrected copy.

Every run prints its figures and appends a row (date, machine, command, figure) to
``benchmarks/RESULTS.md`` unless ``--no-record``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_table import append_row as append_section_row

from kilosnake.drift.detection import unwhitening_matrix
from kilosnake.drift.estimate import estimate_drift
from kilosnake.drift.plot import plot_drift
from kilosnake.groundtruth.drift_error import rms_error_um, true_displacement_per_batch
from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.groundtruth.units import draw_units, unit_template
from kilosnake.io.corrected_traces import (
    DriftCorrectedReader,
    KrigingInterpolator,
    write_corrected_traces,
)
from kilosnake.io.drift_store import KERNELS, DriftEstimate, empty_spikes, write_drift_store
from kilosnake.io.probe import load_probe, neuropixels_like, write_probe_arrays
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.store import open_store, writing_store
from kilosnake.io.traces import PreprocessedReader, create_traces, n_batches
from kilosnake.params import resolve
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening
from kilosnake.runtime.backend import get_backend

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DATA = ROOT / "resources" / "benchmark" / "drift"
SECTION = "## Drift estimation and correction (benchmarks/drift_accuracy.py)"
PRESETS = ("drift", "drift_randomwalk", "drift_nonrigid")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--nblocks", nargs="+", type=int, default=[1, 5])
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of each recording (default: the preset's)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    ap.add_argument("--kernels", action="store_true", help="compare the kriging kernels")
    ap.add_argument(
        "--read-cost",
        action="store_true",
        help="time correcting on read against writing a corrected copy",
    )
    ap.add_argument("--channels", type=int, default=384, help="channels (--read-cost)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration (--read-cost)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    return ap.parse_args(argv)


# --------------------------------------------------------------------------------------------
# recordings


def preprocessed_preset(preset: str, seed: int, duration: float | None, be) -> Path:
    """Folder with the generated recording, its whitening and preprocessed stores."""

    overrides = {} if duration is None else {"duration_s": duration}
    cfg = preset_config(preset, **overrides)
    folder = DATA / f"{preset}_seed{seed}_{cfg.duration_s:g}s"
    if not (folder / "preprocessed.zarr").exists():
        paths = generate(cfg, folder, name="rec", seed=seed)
        info = RecordingInfo(str(paths.bin), cfg.n_channels_total, "int16", cfg.sample_rate)
        p = resolve({"device": be.name})
        compute_whitening(info, load_probe(paths.probe), p, be, folder / "whitening.zarr")
        preprocess_recording(info, folder / "whitening.zarr", p, be, folder / "preprocessed.zarr")
    return folder


# --------------------------------------------------------------------------------------------
# accuracy


def accuracy(folder: Path, nblocks: int, be) -> dict:
    """Estimate the drift of a preprocessed preset and compare it with the ground truth."""

    reader = PreprocessedReader(folder / "preprocessed.zarr")
    wg = open_store(folder / "whitening.zarr")
    unwhiten = unwhitening_matrix(wg["whitening"][...], wg["covariance"][...])
    t0 = time.perf_counter()
    est = estimate_drift(reader, resolve({"nblocks": nblocks}), be, unwhiten)
    seconds = time.perf_counter() - t0
    plot_drift(est, folder / f"drift_nblocks{nblocks}.png")
    gt = load_ground_truth(folder / "rec_gt.npz")
    truth = true_displacement_per_batch(gt, est.NT, est.n_samples, est.sample_rate, est.yblk[0])
    diff = est.dshift[0] - truth
    return {
        "rms": rms_error_um(est.dshift[0], truth),
        "max": float(np.abs(diff - diff.mean()).max()),
        "gain": float(np.polyfit(truth.ravel(), est.dshift[0].ravel(), 1)[0]),
        "true_ptp": float(np.ptp(truth)),
        "seconds": seconds,
        "spikes": int(est.spikes["time"].size),
        "batches": est.n_batches,
    }


def run_accuracy(args, be) -> list[str]:
    figures = []
    for preset in args.presets:
        folder = preprocessed_preset(preset, args.seed, args.duration, be)
        for nblocks in args.nblocks:
            r = accuracy(folder, nblocks, be)
            text = (
                f"{preset} nblocks={nblocks}: RMS error {r['rms']:.2f} um (max "
                f"{r['max']:.1f}, gain {r['gain']:.2f}, true peak to peak "
                f"{r['true_ptp']:.0f} um; {r['spikes']} spikes, {r['batches']} batches, "
                f"{r['seconds']:.1f} s)"
            )
            print(text, flush=True)
            figures.append(text)
    return figures


# --------------------------------------------------------------------------------------------
# kernels


def run_kernels(args, be) -> list[str]:
    """Waveform error and noise variance of both kriging kernels on moved synthetic units."""

    folder = preprocessed_preset("drift", args.seed, args.duration, be)
    cfg = preset_config("drift")
    probe = load_probe(folder / "rec.probe.json")
    w = open_store(folder / "whitening.zarr")["whitening"][...]
    rng = np.random.default_rng(args.seed)
    units = draw_units(cfg, probe, np.full(probe.n_channels, cfg.noise_sd), rng)
    inner = [
        u
        for u in range(units.n_units)
        if probe.yc.min() + 40 < units.position[u, 1] < probe.yc.max() - 40
    ]
    shifts = (-15.0, -10.0, -5.0, -2.5, 2.5, 5.0, 10.0, 15.0)

    def footprint(u, dy):
        pos = units.position[u].copy()
        pos[1] += dy
        return unit_template(units, u, pos, probe.positions, probe.positions, cfg) @ w

    base = {u: footprint(u, 0.0) for u in inner}
    moved = {(u, d): footprint(u, d) for u in inner for d in shifts}
    figures = []
    for kind in KERNELS:
        interp = KrigingInterpolator(probe, 20.0, kind)
        errors, variance = [], []
        for d in shifts:
            m = interp.matrix(np.full(probe.n_channels, d))
            variance.append(float(np.mean((m * m).sum(axis=1))))
            errors += [
                np.linalg.norm(moved[u, d] @ m.T - base[u]) / np.linalg.norm(base[u]) for u in inner
            ]
        uncorrected = np.mean(
            [
                np.linalg.norm(moved[u, d] - base[u]) / np.linalg.norm(base[u])
                for u in inner
                for d in shifts
            ]
        )
        text = (
            f"{kind} kernel (sig 20 um): relative waveform error {np.mean(errors):.3f} "
            f"(uncorrected {uncorrected:.3f}); white-noise variance kept "
            f"{min(variance):.2f}-{max(variance):.2f} ({len(inner)} units, shifts 2.5-15 um)"
        )
        print(text, flush=True)
        figures.append(text)
    return figures


# --------------------------------------------------------------------------------------------
# read cost


def write_noise_store(path: Path, n_channels: int, seconds: float, NT: int):
    """A whitened-noise ``preprocessed.zarr`` on a Neuropixels-like probe."""

    n = int(seconds * 30000)
    probe = neuropixels_like(n_channels)
    rng = np.random.default_rng(0)
    attrs = {"scaleproc": 200.0, "NT": NT, "sample_rate": 30000.0, "n_samples": n}
    with writing_store(path, "preprocess", {}, "cpu", 0, attrs) as g:
        arr = create_traces(g, n, n_channels, NT)
        for s in range(0, n, NT):
            m = min(NT, n - s)
            arr[s : s + m] = np.rint(rng.normal(0, 200, (m, n_channels))).astype(np.int16)
        write_probe_arrays(g, probe)
    return probe, n


def write_ramp_drift(path: Path, probe, n: int, NT: int):
    """A drift store whose displacement ramps from -15 to 15 µm over 5 blocks."""

    nb = n_batches(n, NT)
    ramp = np.linspace(-15, 15, nb)[:, None] * np.linspace(0.5, 1.0, 9)[None, :]
    yblk = np.linspace(probe.yc.min(), probe.yc.max(), 9)[None, :]
    est = DriftEstimate(
        True,
        "",
        NT,
        n,
        30000.0,
        np.array([0.0]),
        ramp[None],
        yblk,
        empty_spikes(),
        np.zeros((1, nb), np.int64),
    )
    write_drift_store(path, est, resolve({"nblocks": 5}), "cpu")


def timed_pass(reader, NT: int) -> float:
    """Seconds to read every batch once."""
    t0 = time.perf_counter()
    for s in range(0, reader.n_samples, NT):
        reader.read(s, min(s + NT, reader.n_samples))
    return time.perf_counter() - t0


def run_read_cost(args, be) -> list[str]:

    NT = 65472
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe, n = write_noise_store(tmp / "pre.zarr", args.channels, args.seconds, NT)
        write_ramp_drift(tmp / "drift.zarr", probe, n, NT)
        plain = PreprocessedReader(tmp / "pre.zarr")
        corrected = DriftCorrectedReader(tmp / "pre.zarr", tmp / "drift.zarr", backend=be)
        timed_pass(plain, NT)  # warm the page cache
        t_plain = min(timed_pass(plain, NT) for _ in range(2))
        t_corr = min(timed_pass(corrected, NT) for _ in range(2))
        t0 = time.perf_counter()
        write_corrected_traces(corrected, tmp / "copy.zarr")
        t_write = time.perf_counter() - t0
        t_copy = min(timed_pass(PreprocessedReader(tmp / "copy.zarr"), NT) for _ in range(2))
        size = sum(f.stat().st_size for f in (tmp / "copy.zarr").rglob("*") if f.is_file())
    nb = -(-n // NT)
    extra_ms = (t_corr - t_plain) / nb * 1e3
    passes = 3  # detect (part), learn, final pass
    text = (
        f"{args.channels} ch x {args.seconds:g} s ({nb} batches), one pass: plain read "
        f"{t_plain:.2f} s, corrected on read {t_corr:.2f} s (+{extra_ms:.0f} ms per batch); "
        f"corrected copy: write {t_write:.2f} s once + read {t_copy:.2f} s "
        f"per pass, {size / 1e6:.0f} MB; {passes} passes: on read {passes * t_corr:.1f} s vs "
        f"copy {t_write + passes * t_copy:.1f} s"
    )
    print(text, flush=True)
    return [text]


# --------------------------------------------------------------------------------------------
# recording results


def machine_label(be) -> str:
    cpus = os.cpu_count() or 0
    return f"{platform.node()} ({cpus} CPUs, {platform.machine()}), {be.device_label}"


def append_row(row: str) -> None:
    """Add ``row`` at the end of this benchmark's section of RESULTS.md (created if missing)."""
    append_section_row(SECTION, row)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))

    be = get_backend(args.device)
    if args.read_cost:
        figures = run_read_cost(args, be)
    elif args.kernels:
        figures = run_kernels(args, be)
    else:
        figures = run_accuracy(args, be)
    if not args.no_record:
        cmd = " ".join(
            shlex.quote(c)
            for c in ["python", "benchmarks/drift_accuracy.py", *(argv or sys.argv[1:])]
        )
        row = (
            f"| {datetime.date.today().isoformat()} | {machine_label(be)} | `{cmd}` | "
            f"{'; '.join(figures)} |\n"
        )
        append_row(row)
        print(f"appended a row to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
