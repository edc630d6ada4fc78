"""Small recordings, probes and recordings tables written for tests."""

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


#: columns of a recordings table (config/recordings.tsv)
TABLE_HEADER = "name\tdat\tprobe\tn_channels\tsample_rate\tdtype\n"


def write_table(path: Path, *rows, header=TABLE_HEADER) -> Path:
    """A recordings table: ``header`` then one tab-separated line per row."""
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path
