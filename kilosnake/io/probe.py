"""Probe descriptions: load, check and write.

A :class:`Probe` is what every stage needs to know about the electrode: which rows of the raw file
hold neural channels (``chan_map``, 0-based), where each contact sits (``xc``, ``yc`` in µm) and on
which shank (``kcoords``). Accepted sources:

* a probeinterface JSON file (``device_channel_indices`` give the rows; ``-1`` = not connected);
* a Kilosort channel-map ``.mat`` file (1-based ``chanMap``, ``connected`` mask);
* a folder with ``chanMap.npy``, ``xc.npy``, ``yc.npy`` and optionally ``kcoords.npy`` (0-based);
* a dict (or pykilosort ``Bunch``) with ``chanMap``, ``xc``, ``yc`` and optionally ``kcoords``;
* a SpikeGLX ``.meta`` file (its ``~snsGeomMap`` or imro table; :mod:`kilosnake.io.spikeglx`).

A ``.prb`` file is Python code and is refused (it would have to be executed to be read).

Where a probe is read, one function per place:

* the user's description (the sources above): :func:`load_probe`, called once, by ``check_input``
  (and by the workflow glue to count shanks); every later stage reads one of the two below;
* ``input.json`` (the probe ``check_input`` resolved, excluded channels left out):
  :func:`kilosnake.io.input_json.probe_from_input_json`;
* a store's ``chan_map``, ``xc``, ``yc``, ``kcoords`` arrays (``whitening.zarr``,
  ``preprocessed.zarr`` and its block stores): :func:`probe_from_store`, written by
  :func:`write_probe_arrays`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError
from kilosnake.io.store import write_array


@dataclasses.dataclass
class Probe:
    """Neural channels of a recording, in the order the sorter uses them."""

    chan_map: np.ndarray  # (Nchan,) int64: 0-based rows of the raw file
    xc: np.ndarray  # (Nchan,) float64 µm
    yc: np.ndarray  # (Nchan,) float64 µm
    kcoords: np.ndarray  # (Nchan,) int64 shank index
    n_channels_total: int | None = None  # NchanTOT, when the description says it
    name: str = "probe"
    one_based_suspect: bool = False  # a 0-based source whose map looks 1-based

    def __post_init__(self):
        self.chan_map = np.asarray(self.chan_map).astype(np.int64).ravel()
        self.xc = np.asarray(self.xc, dtype=np.float64).ravel()
        self.yc = np.asarray(self.yc, dtype=np.float64).ravel()
        kc = np.zeros(self.chan_map.size) if self.kcoords is None else self.kcoords
        self.kcoords = np.asarray(kc, dtype=np.float64).ravel()

    @property
    def n_channels(self) -> int:
        """Number of neural channels the sorter uses (Nchan)."""
        return int(self.chan_map.size)

    def shank_ids(self) -> np.ndarray:
        """The probe's distinct shank ids, sorted (shank index ``k`` is the ``k``-th)."""
        return np.unique(self.kcoords)

    @property
    def positions(self) -> np.ndarray:
        """(Nchan, 2) contact positions in µm."""
        return np.stack([self.xc, self.yc], axis=1)

    def to_dict(self) -> dict:
        """A JSON-serialisable description (lists)."""
        return {
            "chan_map": self.chan_map.tolist(),
            "xc": self.xc.tolist(),
            "yc": self.yc.tolist(),
            "kcoords": self.kcoords.tolist(),
            "n_channels_total": self.n_channels_total,
            "name": self.name,
        }

    def subset(self, keep) -> Probe:
        """The probe restricted to channels ``keep`` (indices or boolean mask, probe order)."""
        keep = np.asarray(keep)
        return Probe(
            self.chan_map[keep],
            self.xc[keep],
            self.yc[keep],
            self.kcoords[keep],
            self.n_channels_total,
            self.name,
        )

    @classmethod
    def from_dict(cls, d: dict) -> Probe:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["chan_map"]),
            d["xc"],
            d["yc"],
            d["kcoords"],
            d.get("n_channels_total"),
            d.get("name", "probe"),
        )


# --------------------------------------------------------------------------------------------
# the probe inside a store


def write_probe_arrays(group, probe: Probe) -> None:
    """Store the probe beside a stage's data so later stages need no other file."""
    write_array(group, "chan_map", probe.chan_map)
    write_array(group, "xc", probe.xc)
    write_array(group, "yc", probe.yc)
    write_array(group, "kcoords", probe.kcoords)


def probe_from_store(group) -> Probe:
    """The probe a store carries (inverse of :func:`write_probe_arrays`)."""
    return Probe(group["chan_map"][...], group["xc"][...], group["yc"][...], group["kcoords"][...])


# --------------------------------------------------------------------------------------------
# loading


def load_probe(source) -> Probe:
    """Load a probe from a path (JSON, ``.mat``, folder) or a dict / Bunch."""
    if isinstance(source, Probe):
        return source
    if isinstance(source, dict) or hasattr(source, "chanMap"):
        return probe_from_mapping(source)
    path = Path(os.fspath(source))
    if not path.exists():
        raise InputError(
            f"probe file {str(path)!r} does not exist",
            "pass the path of a probeinterface .json, a Kilosort .mat channel map, a SpikeGLX "
            ".meta, or a folder with chanMap.npy/xc.npy/yc.npy (--config probe=PATH)",
        )
    if path.is_dir():
        return probe_from_npy_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return probe_from_probeinterface_json(path)
    if suffix == ".mat":
        return probe_from_kilosort_mat(path)
    if suffix == ".meta":
        return probe_from_spikeglx_meta(path)
    if suffix == ".prb":
        raise InputError(
            f"probe file {str(path)!r} is a .prb file, which is Python code; kilosnake does not "
            "execute probe files",
            "convert it to probeinterface JSON (probeinterface: read_prb then "
            "write_probeinterface) or to a folder of chanMap.npy/xc.npy/yc.npy/kcoords.npy",
        )
    raise InputError(
        f"probe file {str(path)!r} has an unknown type {suffix!r}",
        "use a probeinterface .json, a Kilosort .mat, a SpikeGLX .meta, or a folder of .npy files",
    )


def probe_from_spikeglx_meta(path) -> Probe:
    """The probe a SpikeGLX ``.meta`` describes (see :mod:`kilosnake.io.spikeglx`)."""
    from kilosnake.io.spikeglx import probe_arrays

    a = probe_arrays(path)
    return Probe(a["chan_map"], a["xc"], a["yc"], a["kcoords"], a["n_channels_total"], a["name"])


def probe_from_mapping(m) -> Probe:
    """A probe from a dict or pykilosort ``Bunch`` (0-based ``chanMap``)."""
    get = (
        (lambda k, d=None: m.get(k, d))
        if isinstance(m, dict)
        else (lambda k, d=None: getattr(m, k, d))
    )
    missing = [k for k in ("chanMap", "xc", "yc") if get(k) is None]
    if missing:
        raise InputError(
            f"probe mapping lacks {', '.join(missing)}",
            "give chanMap (0-based rows of the raw file), xc and yc (µm)",
        )
    chan_map = np.asarray(get("chanMap")).ravel()
    n_total = get("NchanTOT")
    return Probe(
        chan_map,
        get("xc"),
        get("yc"),
        get("kcoords"),
        None if n_total is None else int(n_total),
        "python",
        one_based_suspect=_looks_one_based(chan_map, n_total),
    )


def probe_from_npy_folder(folder: Path) -> Probe:
    """A probe from ``chanMap.npy``, ``xc.npy``, ``yc.npy`` [, ``kcoords.npy``] (0-based)."""

    def load(name, required=True):
        p = folder / f"{name}.npy"
        if not p.exists():
            if required:
                raise InputError(
                    f"probe folder {str(folder)!r} has no {name}.npy",
                    "put chanMap.npy (0-based), xc.npy and yc.npy in the folder",
                )
            return None
        return np.load(p, allow_pickle=False).squeeze()

    chan_map = load("chanMap")
    return Probe(
        chan_map,
        load("xc"),
        load("yc"),
        load("kcoords", required=False),
        None,
        folder.name,
        one_based_suspect=_looks_one_based(chan_map, None),
    )


def probe_from_kilosort_mat(path: Path) -> Probe:
    """A probe from a Kilosort channel-map ``.mat`` (1-based ``chanMap``, ``connected``)."""
    import scipy.io

    try:
        m = scipy.io.loadmat(path)
    except Exception as exc:
        raise InputError(
            f"cannot read {str(path)!r} as a MATLAB file ({exc})",
            "pass a channel map saved by MATLAB (save chanMap.mat ...)",
        ) from exc
    if "chanMap" not in m and "chanMap0ind" not in m:
        raise InputError(
            f"{str(path)!r} has no chanMap variable",
            "save chanMap (1-based), connected, xcoords, ycoords, kcoords",
        )
    if "chanMap0ind" in m:
        chan_map = np.asarray(m["chanMap0ind"], dtype=np.int64).ravel()
    else:
        chan_map = np.asarray(m["chanMap"], dtype=np.int64).ravel() - 1
    n = chan_map.size
    connected = np.asarray(m.get("connected", np.ones(n)), dtype=bool).ravel()
    # integer arrays in shipped .mat files are often uint8/uint16: cast before arithmetic
    xc = np.asarray(m.get("xcoords", np.zeros(n)), dtype=np.float64).ravel()
    yc = np.asarray(m.get("ycoords", np.arange(n)), dtype=np.float64).ravel()
    kc = m.get("kcoords", m.get("shankInd", np.ones(n)))
    kc = np.asarray(kc, dtype=np.float64).ravel()
    kc = kc - kc.min() if kc.size else kc
    _check_lengths(
        {"chanMap": chan_map, "connected": connected, "xcoords": xc, "ycoords": yc, "kcoords": kc},
        path,
    )
    n_total = int(np.asarray(m["NchanTOT"]).ravel()[0]) if "NchanTOT" in m else None
    return Probe(
        chan_map[connected], xc[connected], yc[connected], kc[connected], n_total, path.stem
    )


def probe_from_probeinterface_json(path: Path) -> Probe:
    """A probe (or several, as shanks) from a probeinterface JSON file."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read {str(path)!r} as JSON ({exc})",
            "write the probe with probeinterface.write_probeinterface",
        ) from exc
    probes = doc.get("probes") if isinstance(doc, dict) else None
    if not probes:
        raise InputError(
            f"{str(path)!r} is not a probeinterface file (no 'probes' list)",
            "write the probe with probeinterface.write_probeinterface",
        )
    rows, xs, ys, shanks = [], [], [], []
    for i, pr in enumerate(probes):
        pos = np.asarray(pr.get("contact_positions", []), dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] < 2:
            raise InputError(
                f"probe {i} in {str(path)!r} has no 2-D contact_positions",
                "give contact_positions as a list of [x, y] in µm",
            )
        dev = pr.get("device_channel_indices")
        if dev is None:
            raise InputError(
                f"probe {i} in {str(path)!r} has no device_channel_indices",
                "set_device_channel_indices() so each contact names its row in "
                "the raw file (-1 for unconnected contacts)",
            )
        dev = np.asarray(dev, dtype=np.int64)
        shank_ids = pr.get("shank_ids")
        shank = (
            np.asarray([_shank_number(s) for s in shank_ids]) if shank_ids else np.zeros(len(dev))
        )
        _check_lengths(
            {"device_channel_indices": dev, "contact_positions": pos, "shank_ids": shank}, path
        )
        keep = dev >= 0
        rows.append(dev[keep])
        xs.append(pos[keep, 0])
        ys.append(pos[keep, 1])
        shanks.append([(i, s) for s in shank[keep]])
    name = probes[0].get("annotations", {}).get("model_name") or path.stem
    # shanks are numbered 0.. in order of (probe, shank id) across the probe group
    pairs = [pair for per_probe in shanks for pair in per_probe]
    numbers = {pair: k for k, pair in enumerate(sorted(set(pairs)))}
    return Probe(
        np.concatenate(rows),
        np.concatenate(xs),
        np.concatenate(ys),
        np.array([numbers[pair] for pair in pairs]),
        None,
        str(name),
    )


def _shank_number(s) -> float:
    try:
        return float(s) if s not in ("", None) else 0.0
    except (TypeError, ValueError):
        return float(abs(hash(s)) % 1000)


def _check_lengths(arrays: dict, path) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InputError(
            f"probe {str(path)!r}: arrays of different lengths ({desc})",
            "every per-channel array must have one entry per channel",
        )


def _looks_one_based(chan_map: np.ndarray, n_total) -> bool:
    """A 0-based map that skips row 0 and ends at row len(map) (or at NchanTOT) looks 1-based."""
    cm = np.asarray(chan_map).ravel()
    if cm.size == 0 or not np.issubdtype(cm.dtype, np.number):
        return False
    return bool(cm.min() == 1 and (cm.max() == cm.size or cm.max() == n_total))


# --------------------------------------------------------------------------------------------
# checks


def validate_probe(probe: Probe, n_channels_total: int) -> None:
    """Raise :class:`InputError` if the probe cannot describe a file of ``n_channels_total``."""
    cm = probe.chan_map
    lengths = {
        "chanMap": cm.size,
        "xc": probe.xc.size,
        "yc": probe.yc.size,
        "kcoords": probe.kcoords.size,
    }
    if len(set(lengths.values())) != 1:
        desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InputError(
            f"probe channel count and map length differ ({desc})",
            "give one x, y and shank entry for every channel of chanMap",
        )
    if cm.size == 0:
        raise InputError(
            "the probe has no connected channels",
            "check the connected mask / device_channel_indices of the probe",
        )
    if probe.one_based_suspect or (cm.min() >= 1 and cm.max() == n_channels_total):
        raise InputError(
            f"the channel map looks 1-based (it runs {cm.min()}..{cm.max()} for a file with "
            f"{n_channels_total} channels) but was given as 0-based",
            "subtract 1 from chanMap (Python probes and chanMap.npy are 0-based; only Kilosort "
            ".mat files are 1-based)",
        )
    bad = cm[(cm < 0) | (cm >= n_channels_total)]
    if bad.size:
        raise InputError(
            f"channel map index {int(bad[0])} is out of range for a file with "
            f"{n_channels_total} channels (valid rows: 0..{n_channels_total - 1})",
            "check n_channels (total channels in the file, sync included) and the channel map",
        )
    values, counts = np.unique(cm, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"channel map lists row(s) {values[counts > 1].tolist()} twice",
            "every raw-file row may appear once in chanMap",
        )
    if not (np.isfinite(probe.xc).all() and np.isfinite(probe.yc).all()):
        bad_ch = np.flatnonzero(~(np.isfinite(probe.xc) & np.isfinite(probe.yc)))
        raise InputError(
            f"channel positions contain NaN/inf at channel(s) {bad_ch.tolist()}",
            "give every connected contact a finite x, y position in µm",
        )
    pos = probe.positions
    _, first, counts = np.unique(pos, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = pos[first[counts > 1][0]]
        raise InputError(
            f"two or more channels share the position x={dup[0]}, y={dup[1]} µm",
            "give each contact a distinct position (check xc/yc and the map order)",
        )


# --------------------------------------------------------------------------------------------
# writing


def write_probeinterface_json(probe: Probe, path) -> None:
    """Write the probe as a probeinterface JSON file (one probe per shank)."""
    probes = []
    for shank in np.unique(probe.kcoords):
        sel = probe.kcoords == shank
        n = int(sel.sum())
        probes.append(
            {
                "ndim": 2,
                "si_units": "um",
                "annotations": {"name": probe.name, "manufacturer": "kilosnake"},
                "contact_annotations": {},
                "contact_positions": probe.positions[sel].tolist(),
                "contact_plane_axes": [[[1.0, 0.0], [0.0, 1.0]]] * n,
                "contact_shapes": ["square"] * n,
                "contact_shape_params": [{"width": 12.0}] * n,
                "device_channel_indices": probe.chan_map[sel].tolist(),
                "contact_ids": [str(i) for i in np.flatnonzero(sel)],
                "shank_ids": [str(int(shank))] * n,
            }
        )
    doc = {"specification": "probeinterface", "version": "0.4.2", "probes": probes}
    Path(path).write_text(json.dumps(doc, indent=1))


def write_npy_folder(probe: Probe, folder) -> None:
    """Write ``chanMap.npy`` (0-based), ``xc.npy``, ``yc.npy``, ``kcoords.npy``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "chanMap.npy", probe.chan_map)
    np.save(folder / "xc.npy", probe.xc)
    np.save(folder / "yc.npy", probe.yc)
    np.save(folder / "kcoords.npy", probe.kcoords)


def neuropixels_like(
    n_channels: int = 384,
    n_shanks: int = 1,
    pitch_um: float = 20.0,
    shank_spacing_um: float = 250.0,
) -> Probe:
    """A staggered 4-column layout like Neuropixels 1.0 (x in {43, 11, 59, 27} µm)."""
    per_shank = n_channels // n_shanks
    if per_shank * n_shanks != n_channels:
        raise ValueError("n_channels must be a multiple of n_shanks")
    i = np.arange(per_shank)
    x = np.array([43.0, 11.0, 59.0, 27.0])[i % 4]
    y = pitch_um * (i // 2) + pitch_um
    xs = np.concatenate([x + s * shank_spacing_um for s in range(n_shanks)])
    ys = np.tile(y, n_shanks)
    ks = np.repeat(np.arange(n_shanks), per_shank)
    return Probe(np.arange(n_channels), xs, ys, ks, n_channels, f"np_like_{n_channels}")
