"""Throughput of the whitening and preprocess stages on a generated noise recording.

    python benchmarks/preprocess_speed.py --channels 384 --seconds 60 --device cpu

Prints seconds per stage, x real time and peak host memory (ru_maxrss of this process).
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from kilosnake.io.probe import neuropixels_like
from kilosnake.io.recording import RecordingInfo
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--device", default="cpu")
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
        preprocess_recording(info, tmp / "w.zarr", p, be, tmp / "p.zarr")
        t2 = time.perf_counter()
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"device {be.device_label}"
    )
    print(
        f"{args.channels} ch x {args.seconds:.0f} s: whitening {t1 - t0:.1f} s, preprocess "
        f"{t2 - t1:.1f} s ({args.seconds / (t2 - t1):.1f}x real time), peak host memory "
        f"{peak_host_memory_mb():.0f} MB"
    )


if __name__ == "__main__":
    main()
