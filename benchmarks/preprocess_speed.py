"""Throughput of the whitening and preprocess stages on a generated noise recording.

    python benchmarks/preprocess_speed.py --channels 384 --seconds 60 --device cpu
    python benchmarks/preprocess_speed.py --device gpu --detections --compare 3 --steps

Prints seconds per stage, x real time and peak host memory (ru_maxrss of this process).
``--detections`` makes the drift detections while preprocessing, as the workflow does.
``--compare N`` preprocesses N more times each with the GPU kernels and with the array code they
replace, alternated (``Backend.array_code``). ``--steps`` times each step of one batch on the
GPU, kernels and array code (CuPy's ``benchmark``: host and GPU time per call).
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kilosnake.io.probe import neuropixels_like
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.traces import n_batches
from kilosnake.params import resolve
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening
from kilosnake.runtime.backend import get_backend
from kilosnake.runtime.logs import peak_host_memory_mb

FS = 30000.0


def write_noise(path: Path, n_samples: int, n_channels: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for start in range(0, n_samples, 300000):
            n = min(300000, n_samples - start)
            rng.normal(0, 20, (n, n_channels)).astype(np.int16).tofile(f)


def timed_preprocess(info, whitening, p, be, out, detections: bool) -> float:
    """Seconds to preprocess the whole recording into ``out`` (removed first)."""
    import shutil

    from kilosnake.drift.detection import DetectionWhilePreprocessing

    shutil.rmtree(out, ignore_errors=True)
    observer = DetectionWhilePreprocessing(whitening, p["spkTh_drift"]) if detections else None
    t0 = time.perf_counter()
    preprocess_recording(info, whitening, p, be, out, observer=observer)
    return time.perf_counter() - t0


def compare_kernels(info, whitening, p, be, out, detections: bool, repeats: int) -> None:
    """Alternated preprocess runs with the kernels and with the array code."""
    times = {"kernels": [], "array code": []}
    for _ in range(repeats):
        for name, backend in (("kernels", be), ("array code", be.array_code())):
            times[name].append(timed_preprocess(info, whitening, p, backend, out, detections))
    for name, values in times.items():
        print(
            f"preprocess with the {name}: median {statistics.median(values):.2f} s "
            f"({', '.join(f'{v:.2f}' for v in values)})"
        )


def time_steps(info, whitening, p, be) -> None:
    """Each step of one batch, kernels and array code, timed by CuPy's ``benchmark``."""
    from cupyx.profiler import benchmark

    from kilosnake.drift.detection import (
        DETECT_MARGIN,
        batch_detections,
        channel_neighbourhoods,
        detection_window,
        unwhitening_matrix,
    )
    from kilosnake.io.prefetch import HostBuffers, to_device
    from kilosnake.io.store import open_store
    from kilosnake.preprocess import kernels
    from kilosnake.preprocess.filters import (
        batch_constants,
        butterworth_sos,
        common_median_reference,
        filter_forward_backward,
        filter_margin,
    )
    from kilosnake.preprocess.traces import whitened_int16

    xp, NT = be.xp, p["NT"]
    margin = filter_margin(p["fshigh"], info.sample_rate, p["ntbuff"])
    wg = open_store(whitening)
    offsets, sos = batch_constants(
        wg["channel_offset"][...], butterworth_sos(p["fshigh"], info.sample_rate, None), be
    )
    w = be.asarray(wg["whitening"][...], xp.float32)
    rng = np.random.default_rng(0)
    n_chan = offsets.size
    pinned = HostBuffers((NT + 2 * margin) * n_chan * 2, 2, pinned=True)
    host = pinned.take((NT + 2 * margin, n_chan), np.int16)
    host[...] = rng.normal(0, 20, host.shape).astype(np.int16)
    raw = to_device(be, host)
    x = kernels.offsets_and_median_reference(raw, offsets, True)
    y = whitened_int16(kernels.sos_forward_backward(x, sos)[margin:-margin], w, 200.0, be)
    hood = channel_neighbourhoods(neuropixels_like(n_chan), be)
    unwhiten = be.asarray(
        unwhitening_matrix(wg["whitening"][...], wg["covariance"][...]), xp.float32
    )
    yc = be.asarray(neuropixels_like(n_chan).yc, xp.float64)
    out = pinned.take(y.shape, np.int16)

    def array_car():
        v = raw.astype(xp.float32)
        v -= offsets[None, :]
        return common_median_reference(v, be)

    steps = {
        "to the GPU (page-locked)": lambda: to_device(be, host),
        "offsets + CAR: kernel": lambda: kernels.offsets_and_median_reference(raw, offsets, True),
        "offsets + CAR: array code": array_car,
        **{
            f"filter forward-backward: kernel, {a} ahead": (
                lambda a=a: kernels.sos_forward_backward(x, sos, a)
            )
            for a in (8, 16, 32, 64)
        },
        "filter forward-backward: array code": lambda: filter_forward_backward(x, sos, be),
        "whitening + int16: kernel": lambda: whitened_int16(x[margin:-margin], w, 200.0, be),
        "whitening + int16: array code": lambda: whitened_int16(
            x[margin:-margin], w, 200.0, be.array_code()
        ),
        "to the host (page-locked)": lambda: y.get(out=out),
        "detection window": lambda: detection_window(y, y, y, 200.0, xp),
        "detections of a batch": lambda: batch_detections(
            detection_window(y, y, y, 200.0, xp),
            1,
            NT,
            2 * NT,
            hood,
            yc,
            p["spkTh_drift"],
            be,
            unwhiten,
        ),
    }
    assert DETECT_MARGIN < NT
    for name, step in steps.items():
        result = benchmark(step, n_repeat=20, n_warmup=3)
        host_ms = float(np.median(result.cpu_times)) * 1e3
        gpu_ms = float(np.median(result.gpu_times[0])) * 1e3
        print(f"{name:45s} host {host_ms:7.2f} ms  GPU {gpu_ms:7.2f} ms")
    time_file_reads(info, NT, margin)


def time_file_reads(info, NT: int, margin: int) -> None:
    """Reading a batch with its margins from the raw file (in the page cache by now) into a
    page-locked buffer, as :class:`kilosnake.io.prefetch.RawBatches` does."""
    from kilosnake.io.prefetch import RawBatches
    from kilosnake.io.recording import RawRecording

    rec = RawRecording(info)
    batches = RawBatches(rec, np.arange(info.n_channels_total), NT, margin, get_backend("gpu"))
    n = n_batches(rec.n_samples, NT)
    seconds = []
    for b in range(1, n - 1):
        t0 = time.perf_counter()
        batches.read(b)
        seconds.append(time.perf_counter() - t0)
    mb = (NT + 2 * margin) * info.n_channels_total * info.itemsize / 1e6
    print(
        f"{'reading a batch from the file (page cache)':45s} median "
        f"{statistics.median(seconds) * 1e3:.2f} ms for {mb:.0f} MB "
        f"({mb / 1e3 / statistics.median(seconds):.2f} GB/s, {len(seconds)} batches)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detections", action="store_true", help="the drift detections too")
    ap.add_argument("--compare", type=int, default=0, metavar="N")
    ap.add_argument("--steps", action="store_true")
    args = ap.parse_args()
    be = get_backend(args.device)
    p = resolve({"device": args.device})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = int(args.seconds * FS)
        write_noise(tmp / "r.bin", n, args.channels)
        info = RecordingInfo(str(tmp / "r.bin"), args.channels, "int16", FS)
        probe = neuropixels_like(args.channels)
        t0 = time.perf_counter()
        compute_whitening(info, probe, p, be, tmp / "w.zarr")
        t1 = time.perf_counter()
        preprocess = timed_preprocess(info, tmp / "w.zarr", p, be, tmp / "p.zarr", args.detections)
        print(
            f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
            f"device {be.device_label}"
        )
        print(
            f"{args.channels} ch x {args.seconds:.0f} s: whitening {t1 - t0:.1f} s, preprocess "
            f"{preprocess:.1f} s ({args.seconds / preprocess:.1f}x real time), peak host memory "
            f"{peak_host_memory_mb():.0f} MB"
        )
        if args.compare:
            compare_kernels(
                info, tmp / "w.zarr", p, be, tmp / "p.zarr", args.detections, args.compare
            )
        if args.steps:
            time_steps(info, tmp / "w.zarr", p, be)


if __name__ == "__main__":
    main()
