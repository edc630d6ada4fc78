"""Small recordings and probes written for tests."""

from pathlib import Path

import numpy as np

from kilosnake.io.probe import Probe, neuropixels_like, write_npy_folder, write_probeinterface_json


def write_noise_recording(
    folder: Path,
    n_channels=32,
    n_samples=40000,
    dtype="int16",
    extra_channels=0,
    seed=0,
    offset=100.0,
    sd=10.0,
) -> Path:
    """Gaussian noise with a DC offset, samples x channels interleaved."""
    rng = np.random.default_rng(seed)
    x = rng.normal(offset, sd, (n_samples, n_channels + extra_channels))
    path = Path(folder) / "rec.bin"
    x.astype(dtype).tofile(path)
    return path


def write_probe_json(folder: Path, probe: Probe | None = None, n_channels=32) -> Path:
    path = Path(folder) / "probe.json"
    write_probeinterface_json(probe or neuropixels_like(n_channels), path)
    return path


def write_probe_folder(folder: Path, probe: Probe) -> Path:
    write_npy_folder(probe, folder)
    return Path(folder)
