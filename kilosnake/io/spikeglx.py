"""SpikeGLX ``.meta`` files: the recording's description and its probe geometry.

A SpikeGLX recording ``<run>_g0_t0.imec0.ap.bin`` has a plain-text ``<run>_g0_t0.imec0.ap.meta``
beside it, one ``key=value`` per line (keys of long values start with ``~``). What kilosnake reads
from it:

* ``nSavedChans``: columns of the binary file (neural channels, then the sync channel);
* ``imSampRate`` (``niSampRate`` for NI-DAQ files): the sample rate;
* ``snsApLfSy``: how many AP, LF and sync columns the file holds (AP or LF columns come first);
* ``snsSaveChanSubset``: which acquired channels were saved (``all``, or a list such as
  ``0:47,768``); the file's columns are these channels in ascending order;
* ``imAiRangeMax``, ``imMaxInt`` and the AP gain (NP1.0: the imro table; NP2.0: 80): µV per bit;
* the geometry of the saved neural channels, from the first of these that is present:

  - ``~snsGeomMap`` (SpikeGLX 2023 and later, every probe type): a header
    ``(part number, shanks, shank pitch, shank width)`` and one ``(shank:x:z:used)`` entry per
    saved neural channel, in file order; x is µm from the shank's left edge, z µm from the tip-most
    row; a contact's x on the probe is ``shank * pitch + x``;
  - ``~imroTbl`` (every version): which electrode each channel records from; kilosnake knows
    the electrode layout of Neuropixels 1.0 (type 0: 2 columns 32 µm apart, staggered by 16 µm
    on alternate rows, 20 µm row pitch; electrode = bank x 384 + channel), Neuropixels 2.0
    single-shank (types 21, 2003, 2004: 2 columns 32 µm apart, 15 µm row pitch; entry
    ``(channel bank-mask reference electrode)``) and 2.0 four-shank (types 24, 2013, 2014:
    ``(channel shank bank reference electrode)``, shanks 250 µm apart);

  channels whose ``used`` flag in ``~snsGeomMap`` (or ``~snsShankMap``) is 0 (e.g. reference
  sites) are left out of the probe.

x and z follow SpikeGLX's coordinates (``~snsGeomMap``): x from the left edge of shank 0,
z (kilosnake's y) from the tip.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError

#: imro table types by electrode layout
NP1_TYPES = frozenset({0})
NP2_SINGLE_TYPES = frozenset({21, 2003, 2004})
NP2_FOUR_SHANK_TYPES = frozenset({24, 2013, 2014})
NP2_TYPES = NP2_SINGLE_TYPES | NP2_FOUR_SHANK_TYPES

#: electrode layouts (µm), in SpikeGLX's coordinates
NP1_ROW_PITCH = 20.0
NP1_COLUMN_PITCH = 32.0
NP1_X_EVEN_ROW = 27.0  # column 0 on rows 0, 2, 4, ...
NP1_X_ODD_ROW = 11.0  # column 0 on rows 1, 3, 5, ...
NP1_CHANNELS = 384
NP2_ROW_PITCH = 15.0
NP2_COLUMN_PITCH = 32.0
NP2_X0 = 27.0
NP2_SHANK_PITCH = 250.0
#: NP2.0 AP gain (fixed; the imro table carries none)
NP2_AP_GAIN = 80.0

META_FIX = (
    "pass --config probe=PATH, or keep the SpikeGLX .meta (written with the .bin) beside the "
    "raw file"
)


def meta_path(raw_path) -> Path:
    """The ``.meta`` file SpikeGLX writes beside ``raw_path`` (it may not exist)."""
    return Path(raw_path).with_suffix(".meta")


def find_meta(raw_path) -> Path | None:
    """The SpikeGLX ``.meta`` beside ``raw_path``, or None."""
    path = meta_path(raw_path)
    return path if path.is_file() else None


def read_meta(path) -> dict:
    """The ``key=value`` lines of a ``.meta`` file as a dict (leading ``~`` dropped)."""
    meta = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip().lstrip("~")] = value.strip()
    return meta


def has_geometry(meta: dict) -> bool:
    """Whether the meta describes where its channels sit (a geometry map or a known imro)."""
    if "snsGeomMap" in meta:
        return True
    return imro_type(meta) in NP1_TYPES | NP2_TYPES


def _entries(text: str) -> tuple[str, list[str]]:
    """Header and entries of a ``(header)(entry)(entry)...`` value."""
    parts = re.findall(r"\(([^()]*)\)", text or "")
    if not parts:
        return "", []
    return parts[0], parts[1:]


def imro_type(meta: dict) -> int | None:
    """The imro table's probe type (its header's first field), or None."""
    header, _ = _entries(meta.get("imroTbl", ""))
    try:
        return int(header.split(",")[0])
    except ValueError:
        return None


def parse_channel_list(text: str) -> list[int]:
    """A printer-like list (``2,4,8,12:150``) as channel numbers."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition(":")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def _counts(meta: dict, key: str) -> tuple[int, int, int] | None:
    try:
        a, b, c = (int(v) for v in meta[key].split(","))
    except (KeyError, ValueError):
        return None
    return a, b, c


def neural_channels(meta: dict, path="") -> np.ndarray:
    """Probe channel (0..383) of each neural column of the file, in file order."""
    stored = _counts(meta, "snsApLfSy")
    if stored is None:
        raise InputError(
            f"SpikeGLX meta {str(path)!r} has no snsApLfSy (channel counts per type)",
            "pass --config probe=PATH: this .meta is not an imec probe's",
        )
    acquired = _counts(meta, "acqApLfSy") or stored
    n_ap, n_lf, _ = stored
    n_neural = n_ap or n_lf
    subset = meta.get("snsSaveChanSubset", "all").strip()
    if subset.lower() == "all":
        saved = list(range(n_neural)) if n_ap else list(range(acquired[0], acquired[0] + n_lf))
    else:
        saved = sorted(parse_channel_list(subset))
    channels = np.asarray(saved[:n_neural], dtype=np.int64)
    if not n_ap:  # an LF file: LF channels are numbered after the AP ones
        channels = channels - acquired[0]
    if channels.size != n_neural:
        raise InputError(
            f"SpikeGLX meta {str(path)!r}: snsSaveChanSubset lists {channels.size} neural "
            f"channels but snsApLfSy says the file holds {n_neural}",
            META_FIX,
        )
    return channels


def geometry_from_geom_map(meta: dict, n_neural: int, path=""):
    """``(x, y, shank, used)`` of each neural column from ``~snsGeomMap``."""
    header, entries = _entries(meta["snsGeomMap"])
    fields = header.split(",")
    pitch = float(fields[2]) if len(fields) > 2 and fields[2] else 0.0
    rows = [e.split(":") for e in entries]
    if len(rows) != n_neural or any(len(r) != 4 for r in rows):
        raise InputError(
            f"SpikeGLX meta {str(path)!r}: ~snsGeomMap has {len(rows)} entries for "
            f"{n_neural} saved neural channels",
            "entries are (shank:x:z:used), one per saved neural channel; " + META_FIX,
        )
    a = np.asarray(rows, dtype=np.float64)
    shank = a[:, 0]
    return shank * pitch + a[:, 1], a[:, 2], shank, a[:, 3] != 0


def _imro_rows(meta: dict, path="") -> dict[int, list[int]]:
    _, entries = _entries(meta.get("imroTbl", ""))
    rows = {}
    for e in entries:
        fields = [int(float(v)) for v in e.split()]
        if fields:
            rows[fields[0]] = fields
    if not rows:
        raise InputError(f"SpikeGLX meta {str(path)!r} has an empty ~imroTbl", META_FIX)
    return rows


def electrode_position(kind: int, fields: list[int]) -> tuple[float, float, int]:
    """``(x, z, shank)`` in µm of the electrode an imro entry selects."""
    if kind in NP1_TYPES:  # (channel bank reference apgain lfgain [highpass])
        electrode = fields[1] * NP1_CHANNELS + fields[0]
        row, col = divmod(electrode, 2)
        x0 = NP1_X_ODD_ROW if row % 2 else NP1_X_EVEN_ROW
        return x0 + NP1_COLUMN_PITCH * col, NP1_ROW_PITCH * row, 0
    if kind in NP2_SINGLE_TYPES:  # (channel bank-mask reference electrode)
        shank, electrode = 0, fields[3]
    else:  # (channel shank bank reference electrode)
        shank, electrode = fields[1], fields[4]
    row, col = divmod(electrode, 2)
    return shank * NP2_SHANK_PITCH + NP2_X0 + NP2_COLUMN_PITCH * col, NP2_ROW_PITCH * row, shank


def geometry_from_imro(meta: dict, channels: np.ndarray, path=""):
    """``(x, y, shank, used)`` of each neural column from the imro table."""
    kind = imro_type(meta)
    if kind not in NP1_TYPES | NP2_TYPES:
        raise InputError(
            f"SpikeGLX meta {str(path)!r}: probe type {kind} (imDatPrb_pn "
            f"{meta.get('imDatPrb_pn', '?')}) has no ~snsGeomMap and an imro table whose "
            "electrode layout kilosnake does not know",
            "record with SpikeGLX 20230202 or later (it writes ~snsGeomMap), or pass "
            "--config probe=PATH (e.g. probeinterface: read_spikeglx, then write_probeinterface)",
        )
    rows = _imro_rows(meta, path)
    missing = [int(c) for c in channels if int(c) not in rows]
    if missing:
        raise InputError(
            f"SpikeGLX meta {str(path)!r}: channel(s) {missing[:5]} are saved but missing from "
            "the ~imroTbl",
            META_FIX,
        )
    pos = np.asarray([electrode_position(kind, rows[int(c)]) for c in channels], dtype=float)
    used = np.ones(channels.size, dtype=bool)
    _, shank_map = _entries(meta.get("snsShankMap", ""))
    if len(shank_map) == channels.size:  # (shank:col:row:used), one per saved neural channel
        used = np.asarray([e.split(":")[-1] != "0" for e in shank_map])
    return pos[:, 0], pos[:, 1], pos[:, 2], used


def probe_arrays(path) -> dict:
    """The probe a SpikeGLX ``.meta`` describes, as plain arrays.

    Returns
    -------
    dict
        ``chan_map`` (file columns of the used neural channels, 0-based), ``xc``, ``yc`` (µm),
        ``kcoords`` (shank), ``n_channels_total`` (nSavedChans), ``name`` (part number),
        ``unused`` (file columns left out: ``used`` flag 0).

    Raises
    ------
    InputError
        When the meta has no channel counts or no geometry kilosnake can read.
    """
    meta = read_meta(path)
    if "nSavedChans" not in meta:
        raise InputError(f"{str(path)!r} is not a SpikeGLX .meta (no nSavedChans)", META_FIX)
    channels = neural_channels(meta, path)
    if "snsGeomMap" in meta:
        x, y, shank, used = geometry_from_geom_map(meta, channels.size, path)
    else:
        x, y, shank, used = geometry_from_imro(meta, channels, path)
    columns = np.arange(channels.size)
    name = meta.get("imDatPrb_pn") or f"imro{imro_type(meta)}"
    return {
        "chan_map": columns[used],
        "xc": x[used],
        "yc": y[used],
        "kcoords": shank[used],
        "n_channels_total": int(meta["nSavedChans"]),
        "name": str(name),
        "unused": columns[~used],
    }


def ap_gain(meta: dict) -> float | None:
    """AP gain: ``imChan0apGain`` when present, else the imro table's (NP1.0) or 80 (NP2.0)."""
    if "imChan0apGain" in meta:
        return float(meta["imChan0apGain"])
    kind = imro_type(meta)
    if kind is None:
        return None
    if kind in NP2_TYPES:
        return NP2_AP_GAIN
    _, entries = _entries(meta.get("imroTbl", ""))
    fields = entries[0].split() if entries else []
    if len(fields) >= 5:  # NP1.0 family: (channel bank reference apgain lfgain [highpass])
        return float(fields[3])
    return None


def recording_fields(meta: dict) -> dict:
    """``n_channels``, ``sample_rate``, ``uv_per_bit`` from a meta (those it has)."""
    out = {}
    if "nSavedChans" in meta:
        out["n_channels"] = int(meta["nSavedChans"])
    for key in ("imSampRate", "niSampRate"):
        if key in meta:
            out["sample_rate"] = float(meta[key])
            break
    gain = ap_gain(meta)
    if gain and "imAiRangeMax" in meta:
        max_int = float(meta.get("imMaxInt", 512))
        out["uv_per_bit"] = float(meta["imAiRangeMax"]) / max_int / gain * 1e6
    return out
