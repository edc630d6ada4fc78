"""Recordings in the formats SpikeInterface reads, as kilosnake takes them: a flat binary file and
a probe.

``--config recording=/data/session format=spikeglx stream=imec0.ap`` names a recording in one of
:data:`FORMATS`; :func:`open_recording` opens it with SpikeInterface (the optional extra
``kilosnake[spikeinterface]``), choosing the stream (:func:`choose_stream`). Then:

* **read in place**: a recording backed by one flat binary file (samples x channels, no header,
  a dtype kilosnake reads: a SpikeGLX ``.bin``, an Open Ephys binary ``continuous.dat``, a
  SpikeInterface binary folder) is sorted from that file; its channels may be some of the file's
  columns (the SpikeGLX AP stream leaves the sync column out) (:func:`flat_binary`);
* **written once**: any other recording is written as int16 to a flat binary under ``results/``
  (:func:`write_int16`), with progress lines; integer traces are kept exactly (unsigned ones
  shifted by half their range), floating-point ones scaled so that the noise spans about ten
  steps (the step is passed on as ``uv_per_bit``).

The probe comes from the recording's probeinterface probe (:func:`probe_of`): contact positions,
shanks, and the file column of each channel.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError
from kilosnake.io.probe import Probe
from kilosnake.io.recording import SUPPORTED_DTYPES
from kilosnake.params import PARAMS_BY_NAME
from kilosnake.runtime.progress import Progress

logger = logging.getLogger(__name__)

#: what installs SpikeInterface for kilosnake
INSTALL = (
    "pip install 'kilosnake[spikeinterface]' (on Python < 3.14 also: "
    "pip install --no-deps spikeinterface)"
)

#: ``format=`` values (the parameter table's choices), each with its SpikeInterface extractor
#: (a ``recording_extractor_full_dict`` name, the format's own name unless listed here):
#: "openephys" picks the binary or legacy reader by the folder, "spikeinterface" is a folder
#: written by a recording's ``save()`` or a ``.json``/``.pkl`` written by its ``dump()``
FORMATS = {fmt: {"spikeinterface": None}.get(fmt, fmt) for fmt in PARAMS_BY_NAME["format"].choices}
#: formats whose readers take no stream
NO_STREAMS = ("spikeinterface",)
#: streams of a multi-stream reader that hold no neural channels (SpikeGLX's sync-only streams)
_NOT_NEURAL = re.compile(r"-SYNC$|^nidq$|^obx", re.IGNORECASE)
#: samples written per step of the conversion (about 1 s at 30 kHz)
CHUNK_SAMPLES = 30000
#: noise SD, in int16 steps, of floating-point traces written as int16
NOISE_STEPS = 10.0


def spikeinterface_extractors():
    """``spikeinterface.extractors``, or an :class:`InputError` saying what to install."""
    try:
        import spikeinterface.extractors as se
    except ImportError as exc:
        raise InputError(
            f"reading a recording with format= needs SpikeInterface, which is not installed "
            f"({exc})",
            f"install the extra: {INSTALL}; or convert the recording to a flat binary and pass "
            "dat= instead",
        ) from exc
    return se


def format_choices() -> str:
    return ", ".join(FORMATS)


def extractor_name(fmt: str, path: Path) -> str:
    """The SpikeInterface extractor of ``fmt`` for the recording at ``path``."""
    if fmt == "openephys":
        binary = path.is_dir() and any(path.rglob("structure.oebin"))
        return "openephysbinary" if binary else "openephyslegacy"
    return FORMATS[fmt]


def neo_streams(fmt: str, path: Path) -> dict[str, str] | None:
    """``{stream name: stream id}`` of the recording, as its Neo-based reader sees it (None: not
    a Neo reader). SpikeGLX names its streams as their ids (``imec0.ap``); Open Ephys by
    record node, processor and probe."""
    spikeinterface_extractors()
    from spikeinterface.extractors.neoextractors import neo_recording_class_dict

    cls = neo_recording_class_dict.get(extractor_name(fmt, path))
    if cls is None:
        return None
    try:
        names, ids = cls.get_streams(str(path))
    except Exception as exc:
        raise InputError(
            f"recording {str(path)!r} cannot be read as format={fmt} ({exc})",
            f"check the path and the format (one of {format_choices()})",
        ) from exc
    return {str(n): str(i) for n, i in zip(names, ids)}


def choose_stream(fmt: str, path: Path, stream: str | None, streams: dict | None):
    """The name of the stream to sort: the one asked for (by name or id), or the only neural
    stream; an :class:`InputError` listing the streams when it is missing or unknown."""
    if fmt in NO_STREAMS or (streams is None and fmt != "nwb"):
        if stream:
            raise InputError(
                f"format={fmt} has no streams, but stream={stream!r} was given",
                "remove stream= from the config",
            )
        return None
    if streams is None:  # NWB: the electrical series path, optional when there is one
        return stream or None
    if stream:
        by_id = {i: n for n, i in streams.items()}
        if stream not in streams and stream not in by_id:
            raise InputError(
                f"recording {str(path)!r} has no stream {stream!r}; its streams are: "
                f"{', '.join(streams)}",
                "pass one of them: --config stream=<stream>",
            )
        return stream if stream in streams else by_id[stream]
    neural = [s for s in streams if not _NOT_NEURAL.search(s)] or list(streams)
    if len(neural) == 1:
        return neural[0]
    raise InputError(
        f"recording {str(path)!r} (format={fmt}) has several streams: {', '.join(neural)}",
        "choose the one to sort: --config stream=<stream>",
    )


def open_recording(path, fmt: str, stream: str | None = None, need_probe: bool = True):
    """``(recording, stream)``: the SpikeInterface recording ``path`` holds in format ``fmt``.

    Raises
    ------
    InputError
        Unknown format, missing path, missing or unknown stream, SpikeInterface not installed,
        a reader's failure, a recording of several segments, or without a probe when
        ``need_probe``.
    """
    if fmt not in FORMATS:
        raise InputError(
            f"format={fmt!r} is not a recording format kilosnake reads",
            f"use one of {format_choices()}",
        )
    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(
            f"recording {str(path)!r} does not exist",
            "check the path given as recording= (relative paths are relative to the folder the "
            "workflow runs in)",
        )
    se = spikeinterface_extractors()
    stream = choose_stream(fmt, path, stream, neo_streams(fmt, path))
    try:
        recording = _read(se, fmt, path, stream)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"recording {str(path)!r} cannot be read as format={fmt} ({exc})",
            f"check the path, the format (one of {format_choices()}) and stream=",
        ) from exc
    _check_sortable(recording, path, need_probe)
    return recording, stream


def _read(se, fmt: str, path: Path, stream: str | None):
    if fmt == "spikeinterface":
        import spikeinterface.core as si

        return si.load(path)
    if fmt == "nwb":
        return se.read_nwb(path, electrical_series_path=stream)
    if fmt == "openephys":
        return se.read_openephys(path, stream_name=stream)
    cls = se.recording_extractor_full_dict[FORMATS[fmt]]
    return cls(path, **({"stream_name": stream} if stream else {}))


def _check_sortable(recording, path: Path, need_probe: bool) -> None:
    if recording.get_num_segments() != 1:
        raise InputError(
            f"recording {str(path)!r} has {recording.get_num_segments()} segments; kilosnake "
            "sorts one",
            "sort each segment on its own, or join them with "
            "spikeinterface.concatenate_recordings and save the result",
        )
    if not need_probe:
        return
    locations = recording.get_channel_locations() if recording.has_probe() else None
    if locations is None or len(locations) != recording.get_num_channels():
        raise InputError(
            f"recording {str(path)!r} has no probe (channel locations)",
            "pass probe= (a probe file whose channel map gives the recording's channels in "
            "order), or attach one with probeinterface (recording.set_probe(...)) and save it",
        )


def recording_name(path, stream: str | None = None) -> str:
    """The results folder's name: the recording's file or folder name (extensions such as
    ``.nwb`` left out), followed by the stream when one was chosen."""
    name = Path(os.fspath(path)).name
    for suffix in (".nwb", ".json", ".pkl", ".rhd", ".rhs", ".bin", ".dat"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if stream:
        name = f"{name}_{stream}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-") or "recording"


# --------------------------------------------------------------------------------------------
# the flat binary behind a recording


def flat_binary(recording) -> dict | None:
    """``{path, dtype, n_channels, columns}`` of the one flat binary file the recording reads
    (a SpikeInterface binary recording, or a Neo reader's raw buffer), or None."""
    return binary_in_place(recording) or neo_buffer_in_place(recording)


def binary_in_place(recording) -> dict | None:
    """``{path, dtype, n_channels, columns}`` when the recording is one flat binary file
    kilosnake can read as it is (one segment, samples x channels, no offset), else None."""
    if recording.get_num_segments() != 1:
        return None
    try:
        if not recording.is_binary_compatible():
            return None
        d = recording.get_binary_description()
    except Exception:
        return None
    paths = d.get("file_paths") or []
    dtype = np.dtype(d.get("dtype")).name
    if (
        len(paths) != 1
        or int(d.get("time_axis", 0)) != 0
        or int(d.get("file_offset", 0) or 0) != 0
        or dtype not in SUPPORTED_DTYPES
        or int(d.get("num_channels", -1)) != recording.get_num_channels()
    ):
        return None
    n = int(d["num_channels"])
    return {
        "path": str(Path(paths[0]).resolve()),
        "dtype": dtype,
        "n_channels": n,
        "columns": list(range(n)),
    }


def neo_buffer_in_place(recording) -> dict | None:
    """The flat binary file behind a recording read by a Neo reader (SpikeGLX ``.bin``, Open
    Ephys binary ``continuous.dat``...), whose channels are some of the file's columns (the
    SpikeGLX AP stream leaves the sync column out): ``{path, dtype, n_channels, columns}``, or
    None when the reader does not describe its buffer or the file is not one flat binary."""
    reader = getattr(recording, "neo_reader", None)
    kwargs = getattr(recording, "_kwargs", {}) or {}
    stream_id = getattr(recording, "stream_id", None) or kwargs.get("stream_id")
    if reader is None or stream_id is None or recording.get_num_segments() != 1:
        return None
    try:
        has_api = reader.has_buffer_description_api
        if not (has_api() if callable(has_api) else has_api):
            return None
        streams = reader.header["signal_streams"]
        buffer_id = streams["buffer_id"][list(streams["id"]).index(stream_id)]
        d = reader.get_analogsignal_buffer_description(0, 0, buffer_id)
        n_samples, n_columns = (int(v) for v in d["shape"])
        selection = reader._stream_buffer_slice.get(stream_id)
        columns = np.arange(n_columns)[selection if selection is not None else slice(None)]
    except Exception as exc:  # a reader without a usable description: write a copy instead
        logger.debug("no flat binary behind the recording (%s)", exc)
        return None
    dtype = np.dtype(d["dtype"]).name
    if (
        d.get("type") != "raw"
        or d.get("order", "C") != "C"
        or int(d.get("file_offset", 0) or 0) != 0
        or dtype not in SUPPORTED_DTYPES
        or columns.size != recording.get_num_channels()
        or n_samples != recording.get_num_samples(segment_index=0)
    ):
        return None
    return {
        "path": str(Path(d["file_path"]).resolve()),
        "dtype": dtype,
        "n_channels": n_columns,
        "columns": columns.tolist(),
    }


def uniform_gain_uv(recording) -> float | None:
    """µV per raw unit when every channel has the same gain, else None (a per-channel offset
    is a constant the high-pass filter removes)."""
    gains = recording.get_channel_gains()
    if gains is None or len(gains) == 0 or np.unique(gains).size != 1:
        return None
    return float(gains[0])


# --------------------------------------------------------------------------------------------
# the probe


def probe_of(recording, columns=None) -> Probe:
    """The recording's probe as kilosnake takes it: one row per recording channel, in channel
    order, ``chan_map`` the file column of each (``columns``, default 0..n-1), shanks numbered
    0.. in order of (probe, shank id)."""
    locations = recording.get_channel_locations()
    n = recording.get_num_channels()
    if locations is None or len(locations) != n:
        raise ValueError("the recording has no probe: attach one with recording.set_probe(...)")
    kcoords = np.zeros(n)
    try:
        table = recording.get_probegroup().to_numpy(complete=True)
        rows = {int(c): i for i, c in enumerate(table["device_channel_indices"]) if c >= 0}
        pairs = [
            (int(table["probe_index"][rows[c]]), str(table["shank_ids"][rows[c]])) for c in range(n)
        ]
        numbers = {pair: k for k, pair in enumerate(sorted(set(pairs)))}
        kcoords = np.array([numbers[p] for p in pairs], dtype=float)
    except Exception as exc:  # no probe group or no shank ids: one shank
        logger.debug("no shank ids in the recording's probe (%s): one shank", exc)
    chan_map = np.arange(n) if columns is None else np.asarray(columns)
    return Probe(chan_map, locations[:, 0], locations[:, 1], kcoords, None, "recording probe")


# --------------------------------------------------------------------------------------------
# writing a recording once as int16


def noise_sd(recording) -> float:
    """Median absolute deviation (as an SD) of a second of traces from the middle."""
    fs = recording.get_sampling_frequency()
    n = recording.get_num_samples(segment_index=0)
    start = max(0, n // 2 - int(fs) // 2)
    x = recording.get_traces(start_frame=start, end_frame=min(n, start + int(fs)))
    x = x.astype(np.float64)
    x = x - np.median(x, axis=0)
    sd = float(np.median(np.abs(x)) / 0.6745)
    return sd if sd > 0 else float(np.std(x)) or 1.0


def int16_mapping(recording) -> tuple[float, float]:
    """``(shift, step)``: int16 value = round((trace - shift) / step). Integer traces of at most
    16 bits are kept exactly (unsigned ones shifted by half their range); others are scaled so
    that the noise spans :data:`NOISE_STEPS` steps."""
    dtype = np.dtype(recording.get_dtype())
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        return (float(2 ** (8 * dtype.itemsize - 1)) if dtype.kind == "u" else 0.0), 1.0
    return 0.0, noise_sd(recording) / NOISE_STEPS


def write_int16(recording, path, log: logging.Logger | None = None) -> float:
    """Write the recording to ``path`` as int16 (samples x channels), chunk by chunk with
    progress lines; return the step of one int16 unit in the recording's units."""
    log = log or logger
    path = Path(path)
    shift, step = int16_mapping(recording)
    n = recording.get_num_samples(segment_index=0)
    n_channels = recording.get_num_channels()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    log.info(
        "writing the recording once as int16 to %s (%d samples x %d channels, %.1f s); later "
        "runs read this file",
        path,
        n,
        n_channels,
        n / recording.get_sampling_frequency(),
    )
    starts = range(0, n, CHUNK_SAMPLES)
    with (
        open(partial, "wb") as f,
        Progress(len(starts), "writing the recording", log=log, unit="chunk") as pr,
    ):
        for start in starts:
            x = recording.get_traces(start_frame=start, end_frame=min(n, start + CHUNK_SAMPLES))
            f.write(to_int16(x, shift, step).tobytes())
            pr.update()
    os.replace(partial, path)
    return step


def to_int16(x: np.ndarray, shift: float, step: float) -> np.ndarray:
    """Traces as int16: ``(x - shift) / step``, rounded and clipped to the int16 range."""
    if shift == 0.0 and step == 1.0 and x.dtype == np.int16:
        return np.ascontiguousarray(x)
    y = np.rint((x.astype(np.float64) - shift) / step)
    return np.clip(y, -32768, 32767).astype(np.int16)
