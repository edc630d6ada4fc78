"""The ``check_input`` stage: look at the recording and the probe before any heavy work.

Fails fast with an :class:`~kilosnake.errors.InputError` naming the problem and the fix, and on
success writes ``input.json`` (shape, duration, dtype, the probe, per-channel RMS and saturation
fraction of a sample of the raw data, and the description it was given: ``requested``) and
nothing else.

Besides sizes and the channel map, a sample of the raw bytes is checked for the tell-tales of a
file read with the wrong description:

* **dtype.** float32 data read as integers decode to plausible floats (and integer data read as
  float32 decode to NaNs, infinities and denormals); unsigned 16-bit data centred on 32768 read
  as int16 (or signed data read as uint16) sit at both ends of the range instead of the middle.
* **Channel count.** Interleaved data are smoothest at the lag of one row: the mean absolute
  difference between values ``L`` apart in the file is smallest when ``L`` is the true channel
  count, because then it compares consecutive samples of one channel; at other lags it compares
  different channels (different offsets, different signals). A count that is a multiple of the
  true one is caught instead by its columns repeating: column ``j`` and column ``j + L`` hold the
  same channel, so their medians agree far more closely than those of neighbouring columns, and
  values ``L`` apart in the file differ as little as values a row apart.

Both need some per-channel structure (offsets, slow signals); data without any (white noise with
equal offsets) cannot be checked this way and pass.

Channels that are flat (all zero, or constant) or stuck at the rails are excluded: ``input.json``
lists them under ``excluded_channels`` and its ``probe`` (the one every later stage uses) leaves
them out.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError
from kilosnake.io.input_json import write_json_atomic
from kilosnake.io.probe import Probe, load_probe, validate_probe
from kilosnake.io.recording import RawRecording, RecordingInfo, recording_info
from kilosnake.params import PARAMS_BY_NAME
from kilosnake.runtime.threads import shared_thread_pool

logger = logging.getLogger(__name__)


#: windows of raw data read for the per-channel statistics
N_STAT_WINDOWS = 20
STAT_WINDOW_S = 0.1
#: windows of raw bytes read for the dtype and channel-count checks
N_LAYOUT_WINDOWS = 16
LAYOUT_WINDOW_BYTES = 1 << 18
#: largest channel count the channel-count check considers
MAX_CHANNELS_CONSIDERED = 2048
#: the given channel count is refused when its lag is this much rougher than the best one
ROUGHNESS_RATIO = 1.5
#: lags within this factor of the smoothest one count as equally smooth
SMOOTHEST_TOLERANCE = 1.2
#: columns repeat with period L when their medians L apart differ this much less than at L ± 1
REPEAT_RATIO = 0.1
#: ... and values L apart in the file are at most this much rougher than values a row apart
SAME_SIGNAL_ROUGHNESS = 1.1
#: a dtype reading is plausible when this fraction of the values is (refused below the second)
FLOAT_PLAUSIBLE_FRACTION = 0.99
FLOAT_IMPLAUSIBLE_FRACTION = 0.9
#: a channel is flat when its RMS is below this fraction of the median channel's
FLAT_RMS_FRACTION = 1e-3
#: a channel saturated in more than this fraction of samples is excluded (warned above 1 %)
SATURATED_EXCLUDE_FRACTION = 0.1
SATURATED_WARN_FRACTION = 0.01

N_CHANNELS_FIX = (
    "check n_channels (total columns in the file, sync channel included: 385 for "
    "Neuropixels 1.0) and dtype"
)


# --------------------------------------------------------------------------------------------
# sizes


def check_file_size(info: RecordingInfo) -> int:
    """Number of samples in the file; errors for empty files and partial rows."""
    size = os.path.getsize(info.path) - info.offset
    if size <= 0:
        raise InputError(
            f"raw file {info.path!r} is empty", "check that the recording was copied completely"
        )
    row = info.n_channels_total * info.itemsize
    if size % row:
        divisors = [
            n for n in (32, 64, 128, 256, 384, 385, 768, 769) if size % (n * info.itemsize) == 0
        ]
        hint = f" (it is a multiple for n_channels in {divisors})" if divisors else ""
        raise InputError(
            f"raw file size {size} bytes is not a multiple of n_channels x itemsize = "
            f"{info.n_channels_total} x {info.itemsize} = {row} bytes{hint}",
            N_CHANNELS_FIX,
        )
    return size // row


def check_length(n_samples: int, NT: int, sample_rate: float) -> None:
    """At least one full batch is needed to estimate the whitening and the templates."""
    if n_samples < NT:
        raise InputError(
            f"the recording has {n_samples} samples ({n_samples / sample_rate:.2f} s), shorter "
            f"than one batch of NT={NT} samples",
            "sort a longer recording, or lower NT (e.g. --config NT=8192) for very short files",
        )


# --------------------------------------------------------------------------------------------
# a sample of the raw bytes


def raw_byte_windows(
    info: RecordingInfo, n_windows: int = N_LAYOUT_WINDOWS, window_bytes: int = LAYOUT_WINDOW_BYTES
) -> list[np.ndarray]:
    """Windows of raw bytes spread over the file.

    Parameters
    ----------
    info : RecordingInfo
        The recording as described by the user.
    n_windows : int
        Number of windows (fewer when the file is short).
    window_bytes : int
        Approximate size of each window.

    Returns
    -------
    list of numpy.ndarray
        uint8 arrays; each starts on a row boundary and a 4-byte boundary and holds whole rows
        and whole 4-byte words.
    """
    size = os.path.getsize(info.path) - info.offset
    row = info.n_channels_total * info.itemsize
    unit = row * 4 // math.gcd(row, 4)
    n_units = size // unit
    if n_units == 0:
        return []
    per_window = max(1, min(n_units, window_bytes // unit))
    starts = np.unique(np.linspace(0, n_units - per_window, n_windows).astype(np.int64))
    windows = []
    with open(info.path, "rb") as f:
        for s in starts:
            f.seek(info.offset + int(s) * unit)
            windows.append(np.fromfile(f, dtype=np.uint8, count=per_window * unit))
    return windows


def as_columns(windows, dtype: str, n_columns: int) -> np.ndarray:
    """The windows decoded as ``dtype`` (little-endian) and stacked as rows of ``n_columns``."""
    dt = np.dtype(dtype).newbyteorder("<")
    return np.concatenate([w.view(dt).reshape(-1, n_columns) for w in windows])


# --------------------------------------------------------------------------------------------
# dtype


def float32_plausibility(windows) -> tuple[float, float]:
    """Fractions of the bytes' float32 readings that are ordinary numbers, and that are nonzero.

    Ordinary: exactly 0, or finite with magnitude in [1e-12, 1e12]. Integer recordings read as
    float32 are mostly NaN, infinite or denormal (their high halves are small integers).
    """
    values = np.concatenate([w.view("<f4") for w in windows])
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(values)
        ordinary = (values == 0) | ((magnitude >= 1e-12) & (magnitude <= 1e12))
    return float(ordinary.mean()), float((values != 0).mean())


def check_float_dtype(windows, dtype: str) -> None:
    """Refuse float32 data declared as integers, and integer data declared as float32."""
    ordinary, nonzero = float32_plausibility(windows)
    if dtype != "float32" and ordinary >= FLOAT_PLAUSIBLE_FRACTION and nonzero >= 0.5:
        raise InputError(
            f"the raw file looks like float32 data, not {dtype}: read as float32, "
            f"{100 * ordinary:.1f}% of its values are ordinary numbers (integer recordings read "
            "as float32 give NaNs and denormals)",
            "set dtype=float32 (or convert the file to int16)",
        )
    if dtype == "float32" and ordinary < FLOAT_IMPLAUSIBLE_FRACTION:
        raise InputError(
            f"the raw file does not look like float32 data: {100 * (1 - ordinary):.0f}% of its "
            "values read as float32 are NaN, infinite, or implausibly small or large",
            "set dtype to what the acquisition system wrote: int16 for SpikeGLX and Open Ephys "
            ".dat files, uint16 for Intan amplifier data",
        )


def edge_fractions(values: np.ndarray, dtype: str) -> tuple[float, float, float]:
    """Where 16-bit values sit: fractions in the lower quarter, upper quarter, and either.

    Quarters of the type's range around its midpoint (0 for int16, 32768 for uint16); values at
    the very ends (saturation) are left out.
    """
    info = np.iinfo(dtype)
    v = values[(values > info.min) & (values < info.max)].astype(np.int64)
    if v.size == 0:
        return 0.0, 0.0, 0.0
    mid = (int(info.min) + int(info.max) + 1) // 2
    quarter = (int(info.max) - int(info.min) + 1) // 4
    low, high = (v < mid - quarter).mean(), (v >= mid + quarter).mean()
    return float(low), float(high), float(low + high)


def check_signedness(windows, dtype: str) -> None:
    """Refuse 16-bit data whose values wrap around the ends of the declared type.

    uint16 data centred on 32768 read as int16 (or int16 data around 0 read as uint16) put
    every value near one end of the range or the other; the other reading puts them in the
    middle.
    """
    if dtype not in ("int16", "uint16") or not windows:
        return
    other = "uint16" if dtype == "int16" else "int16"
    raw = np.concatenate(windows)
    low, high, edges = edge_fractions(raw.view(np.dtype(dtype).newbyteorder("<")), dtype)
    _, _, other_edges = edge_fractions(raw.view(np.dtype(other).newbyteorder("<")), other)
    if edges >= 0.9 and min(low, high) >= 0.05 and other_edges <= 0.1:
        centre = "near 32768" if other == "uint16" else "near 0"
        raise InputError(
            f"the raw data look like {other} (values centred {centre}), not {dtype}: read as "
            f"{dtype}, {100 * edges:.0f}% of the values sit near the ends of the range, jumping "
            "from one end to the other",
            f"set dtype={other}",
        )


# --------------------------------------------------------------------------------------------
# channel count


def divisors(n: int, largest: int) -> list[int]:
    """Divisors of ``n`` from 2 to ``largest``."""
    return [d for d in range(2, largest + 1) if n % d == 0]


def lag_roughness(stacks: list[np.ndarray], lag: int) -> float:
    """Mean absolute difference between values ``lag`` apart within each window, the windows
    given as stacks of windows of one length (:func:`same_length_stacks`).

    A few array operations per lag and stack, not per window: each would wait for the
    interpreter lock again while another thread (the GPU's start) holds it.
    """
    total, count = 0.0, 0
    for v in stacks:
        if v.shape[1] > lag:
            d = np.subtract(v[:, lag:], v[:, :-lag])
            np.abs(d, out=d)  # in place: a second temporary of the stack's size costs more
            # integers summed as integers: the same total as in float64, where it is exact too
            total += float(d.sum(dtype=np.int64 if d.dtype.kind == "i" else None))
            count += d.size
    return total / count if count else math.nan


def same_length_stacks(series: list[np.ndarray]) -> list[np.ndarray]:
    """The 1-D arrays of ``series`` as 2-D stacks (one row each), one stack per length."""
    by_length: dict[int, list[np.ndarray]] = {}
    for v in series:
        by_length.setdefault(v.size, []).append(v)
    return [np.stack(rows) for rows in by_length.values()]


def roughness_series(window: np.ndarray, dtype: str) -> np.ndarray:
    """A window's values for :func:`lag_roughness`: 8- and 16-bit integers as int32 (their
    differences are exact there, and the pass is about twice as fast as in float64), anything
    else as float64."""
    values = window.view(np.dtype(dtype).newbyteorder("<"))
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        return values.astype(np.int32)
    return values.astype(np.float64)


def channel_count_evidence(windows, info: RecordingInfo) -> dict:
    """Roughness of the raw value stream at every plausible channel count.

    Returns
    -------
    dict
        ``roughness`` ({lag: mean absolute difference}), ``given`` (at the declared count),
        ``best`` (smallest roughness) and ``likely`` (smallest count within
        :data:`SMOOTHEST_TOLERANCE` of the best).
    """
    series = [roughness_series(w, info.dtype) for w in windows]
    n_values = (os.path.getsize(info.path) - info.offset) // info.itemsize
    longest = min(MAX_CHANNELS_CONSIDERED, min(s.size for s in series) // 2)
    lags = sorted(set(divisors(n_values, longest)) | {info.n_channels_total})
    stacks = same_length_stacks(series)
    rough = {lag: lag_roughness(stacks, lag) for lag in lags}
    finite = {lag: r for lag, r in rough.items() if np.isfinite(r)}
    best = min(finite.values()) if finite else math.nan
    likely = min(
        (lag for lag, r in finite.items() if r <= SMOOTHEST_TOLERANCE * best), default=None
    )
    return {
        "roughness": rough,
        "given": rough[info.n_channels_total],
        "best": best,
        "likely": likely,
    }


def check_channel_count(evidence: dict, info: RecordingInfo) -> None:
    """Refuse a channel count under which each column jumps between channels."""
    given, best, likely = evidence["given"], evidence["best"], evidence["likely"]
    if not (best > 0 and given > ROUGHNESS_RATIO * best) or likely is None:
        return
    raise InputError(
        f"the raw data do not look like {info.n_channels_total} interleaved channels: read "
        f"that way, each column jumps between channels (sample-to-sample differences "
        f"{given / best:.1f}x larger than when read as {likely} channels); the file probably "
        f"has {likely} channels",
        N_CHANNELS_FIX,
    )


def repeat_period(medians: np.ndarray, min_pairs: int = 8) -> tuple[int, float, float] | None:
    """Smallest proper period with which the per-column medians repeat.

    A period ``L`` is found when the mean difference between medians ``L`` columns apart is at
    most :data:`REPEAT_RATIO` times the mean at ``L - 1`` and ``L + 1`` (a file read with a
    multiple of its channel count gives nearly 0).

    Returns
    -------
    tuple or None
        ``(L, mean difference at L, mean difference at L ± 1)``, or None.
    """
    m = np.asarray(medians, dtype=np.float64)
    n = m.size
    for period in divisors(n, n // 2):
        if n - period - 1 < min_pairs:
            break
        here = np.abs(m[period:] - m[:-period]).mean()
        around = np.mean(
            [np.abs(m[k:] - m[:-k]).mean() for k in (period - 1, period + 1) if 0 < k < n]
        )
        if around > 0 and here <= REPEAT_RATIO * around:
            return period, float(here), float(around)
    return None


def check_repeating_columns(windows, evidence: dict, info: RecordingInfo) -> None:
    """Refuse a channel count that is a multiple of the true one (columns repeat).

    Two tell-tales must agree: the per-column medians repeat with a period ``L``, and values
    ``L`` apart in the file differ no more than values one row apart (both compare samples of
    one channel, a sample or a few apart, when the count is ``L`` times too large).
    """
    x = as_columns(windows, info.dtype, info.n_channels_total)
    found = repeat_period(np.median(x, axis=0))
    if found is None:
        return
    period, here, around = found
    across = evidence["roughness"].get(period, math.inf)
    if across > SAME_SIGNAL_ROUGHNESS * evidence["given"]:
        return
    raise InputError(
        f"the raw data do not look like {info.n_channels_total} channels: column j and column "
        f"j+{period} hold the same signal (their medians differ by {here:.3g} on average, "
        f"against {around:.3g} for columns {period - 1} or {period + 1} apart); the file "
        f"probably has {period} channels",
        N_CHANNELS_FIX,
    )


def check_raw_layout(info: RecordingInfo) -> None:
    """dtype and channel-count checks on a sample of the raw bytes."""
    windows = raw_byte_windows(info)
    if not windows:
        return
    check_float_dtype(windows, info.dtype)
    check_signedness(windows, info.dtype)
    evidence = channel_count_evidence(windows, info)
    check_channel_count(evidence, info)
    check_repeating_columns(windows, evidence, info)


# --------------------------------------------------------------------------------------------
# per-channel statistics and bad channels


def channel_statistics(rec: RawRecording, chan_map) -> dict:
    """RMS (about each channel's median) and fraction of saturated samples per channel."""
    n_win = max(1, int(rec.info.sample_rate * STAT_WINDOW_S))
    starts = np.linspace(0, max(0, rec.n_samples - n_win), N_STAT_WINDOWS).astype(np.int64)
    x = np.concatenate(
        [rec.read(s, min(s + n_win, rec.n_samples), chan_map) for s in np.unique(starts)]
    )
    # channel by channel, each a contiguous row: 3x faster than reducing over the time axis
    by_channel = np.ascontiguousarray(x.T)
    dtype = np.dtype(rec.info.dtype)
    if np.issubdtype(dtype, np.integer):
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        saturated = np.count_nonzero((by_channel <= lo) | (by_channel >= hi), axis=1) / max(
            by_channel.shape[1], 1
        )
    else:
        saturated = np.zeros(by_channel.shape[0])
        by_channel = by_channel.astype(np.float64)
    medians = row_medians(by_channel)
    return {"rms": rms_about(by_channel, medians), "saturation_fraction": saturated}


#: threads computing the channels' medians, a block of channels each (NumPy's partition
#: releases the interpreter lock)
MEDIAN_THREADS = 4


def row_medians(rows: np.ndarray) -> np.ndarray:
    """The median of each row (of integers: exact, no float copy), blocks of rows side by side
    on :data:`MEDIAN_THREADS` threads; the values do not depend on the blocks."""
    block = -(-rows.shape[0] // MEDIAN_THREADS)
    if block < 2:
        return np.median(rows, axis=1)
    pool = shared_thread_pool("channel-medians", MEDIAN_THREADS)
    starts = range(0, len(rows), block)
    parts = pool.map(lambda lo: np.median(rows[lo : lo + block], axis=1), starts)
    return np.concatenate(list(parts))


#: channels whose squares :func:`rms_about` sums at a time (a few MB of int64)
RMS_CHANNEL_BLOCK = 32


def rms_about(by_channel: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """RMS of each row of ``by_channel`` about its value in ``centres``.

    Rows of 8- or 16-bit integers are summed exactly, a block of rows at a time: a median of
    integers is a multiple of 1/2, so twice the deviation is an integer, and the sum of its
    squares fits an int64. Other rows are summed in float64, row by row.
    """
    n = max(by_channel.shape[1], 1)
    rms = np.empty(by_channel.shape[0])
    if by_channel.dtype.kind in "iu" and by_channel.dtype.itemsize <= 2:
        twice_centres = np.rint(2 * centres).astype(np.int64)
        for lo in range(0, by_channel.shape[0], RMS_CHANNEL_BLOCK):
            hi = lo + RMS_CHANNEL_BLOCK
            twice = 2 * by_channel[lo:hi].astype(np.int64) - twice_centres[lo:hi, None]
            squares = np.einsum("ij,ij->i", twice, twice)
            rms[lo:hi] = np.sqrt(squares.astype(np.float64) / 4 / n)
        return rms
    for c, (values, centre) in enumerate(zip(by_channel, centres)):
        centred = values.astype(np.float64) - centre
        rms[c] = math.sqrt(float(np.dot(centred, centred)) / n)
    return rms


def layout_checked_statistics(info: RecordingInfo, probe: Probe) -> dict:
    """:func:`check_raw_layout` and :func:`channel_statistics`, side by side on two threads
    (their NumPy work releases the interpreter lock); a layout problem is raised first, since
    it explains any failure of the statistics."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="layout-check") as pool:
        layout = pool.submit(check_raw_layout, info)
        try:
            stats = channel_statistics(RawRecording(info), probe.chan_map)
        except Exception:
            layout.result()
            raise
        layout.result()
    return stats


def bad_channels(stats: dict) -> dict[int, str]:
    """Channels (probe order) to leave out of the sort: ``{index: "flat" | "saturated"}``."""
    rms, sat = np.asarray(stats["rms"]), np.asarray(stats["saturation_fraction"])
    floor = FLAT_RMS_FRACTION * max(float(np.median(rms)), 1e-12)
    bad = {int(c): "saturated" for c in np.flatnonzero(sat > SATURATED_EXCLUDE_FRACTION)}
    bad.update({int(c): "flat" for c in np.flatnonzero(rms < floor) if c not in bad})
    return dict(sorted(bad.items()))


def warn_bad_channels(stats: dict, probe: Probe, bad: dict[int, str]) -> None:
    """Log excluded channels, and channels saturated often enough to mention but kept."""
    rms, sat = stats["rms"], stats["saturation_fraction"]
    for c, reason in bad.items():
        logger.warning(
            "channel %d (row %d) is %s (RMS %.3g, saturated in %.1f%% of samples): "
            "excluded from sorting",
            c,
            probe.chan_map[c],
            reason,
            rms[c],
            100 * sat[c],
        )
    for c in np.flatnonzero(sat > SATURATED_WARN_FRACTION):
        if c not in bad:
            logger.warning(
                "channel %d (row %d) is saturated in %.1f%% of samples (kept)",
                c,
                probe.chan_map[c],
                100 * sat[c],
            )


def exclude_channels(probe: Probe, stats: dict, bad: dict[int, str]):
    """The probe, statistics and ``excluded_channels`` entries without the ``bad`` channels."""
    keep = np.setdiff1d(np.arange(probe.n_channels), list(bad))
    if keep.size == 0:
        raise InputError(
            "every channel of the probe is flat or saturated",
            "check that the channel map points at the recorded rows and that the "
            "file holds data (n_channels, dtype)",
        )
    excluded = [
        {
            "row": int(probe.chan_map[c]),
            "x": float(probe.xc[c]),
            "y": float(probe.yc[c]),
            "shank": float(probe.kcoords[c]),
            "reason": reason,
            "rms": round(float(stats["rms"][c]), 4),
            "saturation_fraction": round(float(stats["saturation_fraction"][c]), 6),
        }
        for c, reason in bad.items()
    ]
    kept = {k: np.asarray(v)[keep] for k, v in stats.items()}
    return probe.subset(keep), kept, excluded


# --------------------------------------------------------------------------------------------
# the stage


def requested_description(
    dat, probe_source, n_channels, dtype, sample_rate, uv_per_bit, NT
) -> dict:
    """The recording as the user described it (the arguments of :func:`check_input`, as JSON
    values; a probe given as an object rather than a path is left out). ``input.json`` keeps
    it, so that a later run can tell whether the description changed."""
    probe = str(probe_source) if isinstance(probe_source, (str, os.PathLike)) else None
    values = {
        "dat": None if dat is None else str(dat),
        "probe": probe,
        "n_channels": n_channels,
        "dtype": None if dtype is None else str(dtype),
        "sample_rate": sample_rate,
        "uv_per_bit": uv_per_bit,
        "NT": NT,
    }
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}


def check_input(
    dat,
    probe_source,
    n_channels=None,
    dtype=PARAMS_BY_NAME["dtype"].default,
    sample_rate=None,
    uv_per_bit=None,
    NT=PARAMS_BY_NAME["NT"].default,
    out=None,
) -> dict:
    """Check a recording and its probe; write ``input.json`` atomically to ``out``.

    Parameters
    ----------
    dat : path
        The raw binary file.
    probe_source : path, dict or Probe
        The probe (see :func:`kilosnake.io.probe.load_probe`).
    n_channels, dtype, sample_rate, uv_per_bit
        The recording's description (a SpikeGLX ``.meta`` fills what is not given).
    NT : int
        Batch length; the recording must hold at least one batch.
    out : path, optional
        Where to write ``input.json``.

    Returns
    -------
    dict
        The content of ``input.json``.

    Raises
    ------
    InputError
        Naming the problem and its fix; nothing is written then.
    """
    requested = requested_description(
        dat, probe_source, n_channels, dtype, sample_rate, uv_per_bit, NT
    )
    if probe_source is None or probe_source == "" or probe_source == []:
        raise InputError(
            f"no probe given, and no SpikeGLX .meta with the probe's geometry beside {dat}",
            "pass --config probe=PATH (probeinterface .json, Kilosort .mat, a folder with "
            "chanMap.npy/xc.npy/yc.npy, or a SpikeGLX .meta), or keep the SpikeGLX .meta "
            "(same name as the .bin, ending .meta) beside the raw file: its imro table or "
            "~snsGeomMap gives the probe",
        )
    probe = load_probe(probe_source)
    if n_channels is None and probe.n_channels_total is not None:
        n_channels = probe.n_channels_total
    info = recording_info(dat, n_channels, dtype, sample_rate, uv_per_bit)
    n_samples = check_file_size(info)
    validate_probe(probe, info.n_channels_total)
    check_length(n_samples, NT, info.sample_rate)
    stats = layout_checked_statistics(info, probe)
    bad = bad_channels(stats)
    warn_bad_channels(stats, probe, bad)
    probe, stats, excluded = exclude_channels(probe, stats, bad)
    report = {
        "dat": str(Path(info.path)),
        "n_channels_total": info.n_channels_total,
        "dtype": info.dtype,
        "sample_rate": info.sample_rate,
        "uv_per_bit": info.uv_per_bit,
        "n_samples": int(n_samples),
        "duration_s": n_samples / info.sample_rate,
        "NT": int(NT),
        "n_batches": int(-(-n_samples // NT)),
        "probe": probe.to_dict(),
        "rms": stats["rms"].round(4).tolist(),
        "saturation_fraction": stats["saturation_fraction"].round(6).tolist(),
        "excluded_channels": excluded,
        "requested": requested,
    }
    logger.info(
        "recording %s: %d samples (%.1f s) x %d channels (%d on the probe, %d "
        "excluded), %s, %.0f Hz",
        info.path,
        n_samples,
        report["duration_s"],
        info.n_channels_total,
        probe.n_channels,
        len(excluded),
        info.dtype,
        info.sample_rate,
    )
    if out is not None:
        write_json_atomic(report, out)
    return report
