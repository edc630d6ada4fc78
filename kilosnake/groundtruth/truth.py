"""Ground-truth files: the known spike trains (and, for generated recordings, everything the
generator drew). :func:`load_ground_truth` is the one reader of ``<name>_gt.npz``.
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
    arrays : dict
        Every entry of the file as stored (0-d entries as Python scalars). A generated recording's
        file holds ``spike_times`` (uint64, trough sample on the peak channel, sorted),
        ``spike_units`` (int64), ``spike_amplitudes`` (per-spike factor), ``templates``
        (n_units, n_t, n_channels) float32 raw units at zero displacement,
        ``template_trough_index`` (int), ``unit_positions`` (n_units, 3) µm x, y, z,
        ``unit_shank``, ``snr``, ``peak_channel``, ``firing_rate`` (Hz, the drawn rate),
        ``n_spikes``, ``noise_sd`` (per channel, raw units), ``channel_positions``,
        ``sample_rate`` (float), ``drift_times_s`` (n_times,), ``drift_depths_um`` (n_depths,),
        ``drift_um`` (n_times, n_depths): displacement of the units along y relative to the probe
        (positive: towards larger y), zero everywhere without drift.
    """

    times: np.ndarray
    units: np.ndarray
    snr: np.ndarray | None = None
    sample_rate: float | None = None
    arrays: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# loaders


def load_ground_truth(gt_npz) -> GroundTruth:
    """Load a ground-truth ``.npz`` (``spike_times``, ``spike_units``, optional ``snr``; every
    entry is kept in :attr:`GroundTruth.arrays`).

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
        arrays = {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}
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
    return GroundTruth(times=times, units=units, snr=snr, sample_rate=sample_rate, arrays=arrays)


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
