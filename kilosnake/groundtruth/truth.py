"""Ground-truth files: the known spike trains (and, for generated recordings, everything the
generator drew).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from kilosnake.errors import InputError


@dataclasses.dataclass
class GroundTruth:
    """Ground-truth spikes of a generated recording.

    Attributes
    ----------
    times : ndarray of uint64
        Spike times (samples).
    units : ndarray of int64
        Unit id of each spike.
    snr : ndarray of float64 or None
        SNR of each unit, indexed by unit id.
    sample_rate : float or None
        Sampling rate (Hz), from the companion ``.meta.json`` when found.
    """

    times: np.ndarray
    units: np.ndarray
    snr: np.ndarray | None = None
    sample_rate: float | None = None


# --------------------------------------------------------------------------------------------
# loaders


def load_ground_truth(gt_npz) -> GroundTruth:
    """Load a ground-truth ``.npz`` (``spike_times``, ``spike_units``, optional ``snr``).

    The sampling rate comes from a ``sample_rate`` entry of the file if any, else from the
    companion ``<name>.meta.json`` (for ``x_gt.npz`` also ``x.meta.json``).

    Parameters
    ----------
    gt_npz : str or Path
        The ground-truth file.

    Returns
    -------
    GroundTruth
    """
    path = Path(gt_npz)
    if not path.is_file():
        raise InputError(
            f"ground-truth file {str(path)!r} does not exist",
            "give the .npz written with the generated recording",
        )
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("spike_times", "spike_units") if k not in data.files]
        if missing:
            raise InputError(
                f"ground-truth file {str(path)!r} lacks {', '.join(missing)}",
                "give a file with spike_times and spike_units arrays",
            )
        times = np.asarray(data["spike_times"]).ravel().astype(np.uint64, copy=False)
        units = np.asarray(data["spike_units"]).ravel().astype(np.int64)
        snr = np.asarray(data["snr"], dtype=np.float64).ravel() if "snr" in data.files else None
        sample_rate = float(data["sample_rate"]) if "sample_rate" in data.files else None
    if sample_rate is None:
        sample_rate = _sample_rate_from_meta(path)
    return GroundTruth(times=times, units=units, snr=snr, sample_rate=sample_rate)


def _meta_candidates(gt_path: Path):
    stem = gt_path.name[: -len(".npz")] if gt_path.name.endswith(".npz") else gt_path.stem
    names = [f"{stem}.meta.json"]
    for suffix in ("_gt", ".gt", "-gt"):
        if stem.endswith(suffix):
            names.append(f"{stem[: -len(suffix)]}.meta.json")
    return [gt_path.with_name(n) for n in names]


def _sample_rate_from_meta(gt_path: Path):
    for meta in _meta_candidates(gt_path):
        if meta.is_file():
            rate = json.loads(meta.read_text()).get("sample_rate")
            if rate is not None:
                return float(rate)
    return None
