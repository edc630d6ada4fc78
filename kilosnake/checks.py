"""The ``check_input`` stage: look at the recording and the probe before any heavy work.

Fails fast with an :class:`~kilosnake.errors.InputError` naming the problem and the fix, and on
success writes ``input.json`` (shape, duration, dtype, the probe, per-channel RMS and saturation
fraction of a sample of the raw data) and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .probe import Probe, load_probe, validate_probe
from .recording import RawRecording, RecordingInfo, recording_info

logger = logging.getLogger(__name__)

#: windows of raw data read for the per-channel statistics
N_STAT_WINDOWS = 20
STAT_WINDOW_S = 0.1


def check_file_size(info: RecordingInfo) -> int:
    """Number of samples in the file; errors for empty files and partial rows."""
    size = os.path.getsize(info.path) - info.offset
    if size <= 0:
        raise InputError(f"raw file {info.path!r} is empty",
                         "check that the recording was copied completely")
    row = info.n_channels_total * info.itemsize
    if size % row:
        divisors = [n for n in (32, 64, 128, 256, 384, 385, 768, 769) if size % (
            n * info.itemsize) == 0]
        hint = f" (it is a multiple for n_channels in {divisors})" if divisors else ""
        raise InputError(
            f"raw file size {size} bytes is not a multiple of n_channels x itemsize = "
            f"{info.n_channels_total} x {info.itemsize} = {row} bytes{hint}",
            "check n_channels (total columns in the file, sync channel included: 385 for "
            "Neuropixels 1.0) and dtype")
    return size // row


def check_length(n_samples: int, NT: int, sample_rate: float) -> None:
    """At least one full batch is needed to estimate the whitening and the templates."""
    if n_samples < NT:
        raise InputError(
            f"the recording has {n_samples} samples ({n_samples / sample_rate:.2f} s), shorter "
            f"than one batch of NT={NT} samples",
            "sort a longer recording, or lower NT (e.g. --config NT=8192) for very short files")


def channel_statistics(rec: RawRecording, chan_map) -> dict:
    """RMS (about each channel's median) and fraction of saturated samples per channel."""
    n_win = max(1, int(rec.info.sample_rate * STAT_WINDOW_S))
    starts = np.linspace(0, max(0, rec.n_samples - n_win), N_STAT_WINDOWS).astype(np.int64)
    x = np.concatenate([rec.read(s, min(s + n_win, rec.n_samples), chan_map)
                        for s in np.unique(starts)])
    dtype = np.dtype(rec.info.dtype)
    if np.issubdtype(dtype, np.integer):
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        saturated = ((x <= lo) | (x >= hi)).mean(axis=0)
    else:
        saturated = np.zeros(x.shape[1])
    xf = x.astype(np.float64)
    rms = np.sqrt(((xf - np.median(xf, axis=0)) ** 2).mean(axis=0))
    return {"rms": rms, "saturation_fraction": saturated}


def check_input(dat, probe_source, n_channels=None, dtype="int16", sample_rate=None,
                uv_per_bit=None, NT=65472, out=None) -> dict:
    """Check a recording and its probe; write ``input.json`` atomically to ``out``."""
    if probe_source is None or probe_source == "" or probe_source == []:
        raise InputError("no probe given",
                         "pass --config probe=PATH (probeinterface .json, Kilosort .mat, or a "
                         "folder with chanMap.npy/xc.npy/yc.npy)")
    probe = load_probe(probe_source)
    if n_channels is None and probe.n_channels_total is not None:
        n_channels = probe.n_channels_total
    info = recording_info(dat, n_channels, dtype, sample_rate, uv_per_bit)
    n_samples = check_file_size(info)
    validate_probe(probe, info.n_channels_total)
    check_length(n_samples, NT, info.sample_rate)
    rec = RawRecording(info)
    stats = channel_statistics(rec, probe.chan_map)
    warn_bad_channels(stats, probe)
    report = {
        "dat": str(Path(info.path)), "n_channels_total": info.n_channels_total,
        "dtype": info.dtype, "sample_rate": info.sample_rate, "uv_per_bit": info.uv_per_bit,
        "n_samples": int(n_samples), "duration_s": n_samples / info.sample_rate,
        "NT": int(NT), "n_batches": int(-(-n_samples // NT)), "probe": probe.to_dict(),
        "rms": stats["rms"].round(4).tolist(),
        "saturation_fraction": stats["saturation_fraction"].round(6).tolist(),
    }
    logger.info("recording %s: %d samples (%.1f s) x %d channels (%d on the probe), %s, %.0f Hz",
                info.path, n_samples, report["duration_s"], info.n_channels_total,
                probe.n_channels, info.dtype, info.sample_rate)
    if out is not None:
        write_json_atomic(report, out)
    return report


def warn_bad_channels(stats: dict, probe: Probe) -> None:
    """Log channels that are flat or often saturated (they are kept; the report shows them)."""
    rms, sat = stats["rms"], stats["saturation_fraction"]
    flat = np.flatnonzero(rms < 1e-3 * max(np.median(rms), 1e-12))
    for c in flat:
        logger.warning("channel %d (row %d) is flat (RMS %.3g)", c, probe.chan_map[c], rms[c])
    for c in np.flatnonzero(sat > 0.01):
        logger.warning("channel %d (row %d) is saturated in %.1f%% of samples", c,
                       probe.chan_map[c], 100 * sat[c])


def read_input_json(path) -> dict:
    """Read ``input.json`` back."""
    return json.loads(Path(path).read_text())


def info_from_input_json(report: dict) -> RecordingInfo:
    """The :class:`RecordingInfo` that ``check_input`` resolved."""
    return RecordingInfo(report["dat"], report["n_channels_total"], report["dtype"],
                         report["sample_rate"], report["uv_per_bit"])


def probe_from_input_json(report: dict) -> Probe:
    return Probe.from_dict(report["probe"])


def write_json_atomic(obj, path) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
