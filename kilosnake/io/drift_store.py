"""drift.zarr: the displacement estimate per batch and depth block, and the spikes it was made
from.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kilosnake.io.store import open_store, write_array, writing_store
from kilosnake.io.traces import n_batches

# --- correction --------------------------------------------------------------------------------
KRIGING_RIDGE = 0.01

KERNELS = ("exponential", "gaussian")

#: chosen by measurement (benchmarks/drift_accuracy.py --kernels): on whitened synthetic
#: footprints moved by 2.5-15 um the Gaussian kernel leaves half the waveform error of the
#: exponential one (0.10 vs 0.18 relative) and keeps white noise at 70-99 % of its variance
#: (exponential: 38-82 %)
KRIGING_KERNEL = "gaussian"


# --------------------------------------------------------------------------------------------
# the whole estimate


#: depth bin of the registration fingerprints (µm)
DEPTH_BIN_UM = 5.0


def empty_spikes() -> dict:
    """The detection arrays with no detection."""
    return {
        "time": np.zeros(0, np.int64),
        "channel": np.zeros(0, np.int32),
        "depth": np.zeros(0, np.float32),
        "amplitude": np.zeros(0, np.float32),
        "batch": np.zeros(0, np.int32),
        "shank": np.zeros(0, np.int32),
    }


@dataclasses.dataclass
class DriftEstimate:
    """What ``drift.zarr`` holds (host arrays); see :func:`write_drift_store`."""

    enabled: bool
    reason: str
    NT: int
    n_samples: int
    sample_rate: float
    shank_ids: np.ndarray  # (n_shanks,) kcoords value of each shank
    dshift: np.ndarray  # (n_shanks, n_batches, n_blocks) µm
    yblk: np.ndarray  # (n_shanks, n_blocks) µm
    spikes: dict  # time, channel, depth, amplitude, batch, shank (per detection)
    spikes_per_batch: np.ndarray  # (n_shanks, n_batches)
    localisation: str = "none"  # "filtered" or "whitened" waveforms, "none" when off

    @property
    def n_batches(self) -> int:
        return n_batches(self.n_samples, self.NT)


# --------------------------------------------------------------------------------------------
# the store


STORE_ARRAYS = ("dshift", "yblk", "shank_ids", "batch_time_s", "spikes_per_batch")
SPIKE_ARRAYS = ("time", "channel", "depth", "amplitude", "batch", "shank")


def write_drift_store(out, est: DriftEstimate, p: dict, device: str) -> None:
    """Write ``drift.zarr`` (layout in the module docstring); ``p``: resolved parameters
    (:func:`kilosnake.params.resolve`), whose drift values the store's attributes repeat."""
    nb = est.n_batches
    centres = (
        (np.arange(nb) * est.NT + np.minimum((np.arange(nb) + 1) * est.NT, est.n_samples))
        / 2.0
        / est.sample_rate
    )
    attrs = {
        "enabled": bool(est.enabled),
        "reason": est.reason,
        "NT": int(est.NT),
        "n_samples": int(est.n_samples),
        "sample_rate": float(est.sample_rate),
        "n_batches": int(nb),
        "nblocks": int(p["nblocks"]),
        "n_blocks": int(est.dshift.shape[2]),
        "kernel": KRIGING_KERNEL,
        "sig_datashift": float(p["sig_datashift"]),
        "ridge": KRIGING_RIDGE,
        "spkTh_drift": float(p["spkTh_drift"]),
        "depth_bin_um": DEPTH_BIN_UM,
        "localisation": est.localisation,
        "sign": "dshift > 0: units sit at larger y than in the reference (the median "
        "position); corrected depth = depth - dshift",
    }
    with writing_store(out, "drift", p, device, p.get("seed"), attrs) as g:
        write_array(g, "dshift", est.dshift.astype(np.float64))
        write_array(g, "yblk", est.yblk.astype(np.float64))
        write_array(g, "shank_ids", est.shank_ids.astype(np.float64))
        write_array(g, "batch_time_s", centres)
        write_array(g, "spikes_per_batch", est.spikes_per_batch.astype(np.int64))
        spikes = g.create_group("spikes")
        for name in SPIKE_ARRAYS:
            write_array(
                spikes,
                name,
                est.spikes[name],
                chunks=(max(1, min(est.spikes[name].size, 1 << 20)),),
            )


def read_drift_store(path) -> DriftEstimate:
    """Inverse of :func:`write_drift_store` (spikes included when present)."""
    g = open_store(path)
    a = g.attrs
    spikes = empty_spikes()
    if "spikes" in g:
        spikes = {name: np.asarray(g["spikes"][name][...]) for name in SPIKE_ARRAYS}
    return DriftEstimate(
        bool(a["enabled"]),
        str(a.get("reason", "")),
        int(a["NT"]),
        int(a["n_samples"]),
        float(a["sample_rate"]),
        np.asarray(g["shank_ids"][...]),
        np.asarray(g["dshift"][...]),
        np.asarray(g["yblk"][...]),
        spikes,
        np.asarray(g["spikes_per_batch"][...]) if "spikes_per_batch" in g else np.zeros(0),
        str(a.get("localisation", "none")),
    )
