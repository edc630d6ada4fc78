"""Rule input_report: the input check picture (probe, per-channel statistics, raw traces)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from kilosnake.io.input_json import probe_from_input_json, read_input_json
from kilosnake.io.recording import RawRecording, RecordingInfo
from kilosnake.report.figures import input_check_figure, png_bytes

logger = logging.getLogger(__name__)


#: flagged as flat below this fraction of the median RMS (as the input check warns)
FLAT_FRACTION = 1e-3
#: flagged as noisy above this multiple of the median RMS
NOISY_FACTOR = 3.0
#: flagged as saturated above this fraction of values at the dtype's limits
SATURATED_FRACTION = 0.01


# --------------------------------------------------------------------------------------------
# channels and the raw file


#: length of the trace windows (s)
TRACE_WINDOW_S = 0.1


def channel_flags(rms, saturation) -> dict:
    """Flat, noisy and saturated channels.

    Parameters
    ----------
    rms, saturation : array-like (Nchan,)
        Per-channel RMS (any unit) and fraction of saturated values (``input.json``).

    Returns
    -------
    dict of str → bool ndarray (Nchan,)
        ``flat``, ``noisy``, ``saturated``.
    """
    rms = np.asarray(rms, dtype=np.float64)
    sat = np.asarray(saturation, dtype=np.float64)
    med = float(np.median(rms)) if rms.size else 0.0
    return {
        "flat": rms < FLAT_FRACTION * max(med, 1e-12),
        "noisy": rms > NOISY_FACTOR * med if med > 0 else np.zeros(rms.size, bool),
        "saturated": sat > SATURATED_FRACTION,
    }


def probe_order(kcoords, yc, xc) -> np.ndarray:
    """Channel indices sorted by shank, then depth, then x: the order traces are drawn in."""
    return np.lexsort((np.asarray(xc), np.asarray(yc), np.asarray(kcoords)))


def resolve_raw_path(dat: str, input_json) -> Path | None:
    """The raw file named in ``input.json``: as written, else relative to the workflow folder.

    ``input.json`` keeps the path the workflow was given, often relative to the folder Snakemake
    ran in (the parent of ``results/``).
    """
    p = Path(dat)
    if p.is_file():
        return p
    if not p.is_absolute():
        for parent in Path(input_json).resolve().parents:
            if parent.name == "results" and (parent.parent / p).is_file():
                return parent.parent / p
    return None


def read_raw_window(info: dict, raw_path, start: int, n: int) -> np.ndarray:
    """``n`` raw samples from ``start`` of the probe's channels, median removed, in µV if known.

    Returns
    -------
    ndarray (n, Nchan) float32, channels in probe (``chan_map``) order
    """

    rec = RawRecording(
        RecordingInfo(
            str(raw_path),
            info["n_channels_total"],
            info["dtype"],
            info["sample_rate"],
            info.get("uv_per_bit"),
        )
    )
    start = int(np.clip(start, 0, max(rec.n_samples - n, 0)))
    x = rec.read(start, start + n, probe_from_input_json(info).chan_map).astype(np.float32)
    x -= np.median(x, axis=0)
    return x * np.float32(info.get("uv_per_bit") or 1.0)


def amplitude_unit(info: dict) -> str:
    """``µV`` when ``uv_per_bit`` is known, else ``raw units``."""
    return "µV" if info.get("uv_per_bit") else "raw units"


@dataclasses.dataclass
class InputView:
    """What the input-check picture shows (channels in ``chan_map`` order)."""

    title: str
    probe_name: str
    xc: np.ndarray
    yc: np.ndarray
    kcoords: np.ndarray
    order: np.ndarray
    rms: np.ndarray
    saturation: np.ndarray
    flags: dict
    amplitude_unit: str
    sample_rate: float
    raw: np.ndarray | None  # (n, Nchan) in probe order (``order`` applied)
    raw_start_s: float
    unused_rows: list
    noisy_factor: float = NOISY_FACTOR
    saturated_fraction: float = SATURATED_FRACTION


def input_view(
    input_json, start_s: float | None = None, window_s: float = TRACE_WINDOW_S
) -> InputView:
    """Read what the input check shows from ``input.json`` and the raw file.

    Parameters
    ----------
    input_json : str or Path
    start_s : float, optional
        Start of the raw window (s); the middle of the recording by default.
    window_s : float
        Length of the raw window (s).
    """
    info = read_input_json(input_json)
    probe = probe_from_input_json(info)
    xc, yc, kc = probe.xc, probe.yc, probe.kcoords
    order = probe_order(kc, yc, xc)
    scale = info.get("uv_per_bit") or 1.0
    rms = np.asarray(info["rms"], float) * scale
    sat = np.asarray(info["saturation_fraction"], float)
    fs = float(info["sample_rate"])
    n = int(round(window_s * fs))
    start = int(round((start_s if start_s is not None else info["duration_s"] / 2) * fs))
    raw_path = resolve_raw_path(info["dat"], input_json)
    raw = None
    if raw_path is not None:
        start = int(np.clip(start, 0, max(info["n_samples"] - n, 0)))
        raw = read_raw_window(info, raw_path, start, n)[:, order]
    else:
        logger.warning("raw file %s not found: the input check shows no traces", info["dat"])
    used = set(int(c) for c in probe.chan_map)
    unused = [r for r in range(int(info["n_channels_total"])) if r not in used]
    title = (
        f"{Path(info['dat']).name}: {info['duration_s']:.1f} s at {fs:g} Hz, "
        f"{len(xc)} channels on the probe of {info['n_channels_total']} in the file"
        + (f" (rows not on the probe: {_ranges(unused)})" if unused else "")
    )
    return InputView(
        title,
        str(probe.name),
        xc,
        yc,
        kc,
        order,
        rms,
        sat,
        channel_flags(rms, sat),
        amplitude_unit(info),
        fs,
        raw,
        start / fs,
        unused,
    )


def _ranges(values) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2, 5"``."""
    out, values = [], sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def write_input_check(input_json, out) -> None:
    """The ``input_report`` stage: ``input.json`` + raw file → ``input_check.png``.

    Parameters
    ----------
    input_json : str or Path
    out : str or Path
        PNG to write (through a temporary file and a rename).
    """

    view = input_view(input_json)
    for name, mask in view.flags.items():
        if mask.any():
            logger.info(
                "%d %s channels: %s", int(mask.sum()), name, _ranges(np.flatnonzero(mask).tolist())
            )
    _write_bytes(out, png_bytes(input_check_figure(view)))
    logger.info("input check picture written to %s", out)


def _write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
