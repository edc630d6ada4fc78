"""How far a drift estimate is from the generator's true displacement."""

from __future__ import annotations

import numpy as np

from kilosnake.groundtruth.truth import GroundTruth
from kilosnake.io.traces import n_batches

# --------------------------------------------------------------------------------------------
# evaluation against a known displacement


def true_displacement_per_batch(
    gt: GroundTruth, NT: int, n_samples: int, sample_rate: float, yblk
) -> np.ndarray:
    """Mean true displacement over each batch at the depths ``yblk``, (n_batches, n_blocks) µm.

    ``gt.arrays`` holds ``drift_times_s``, ``drift_depths_um`` and ``drift_um`` (as written by
    :mod:`kilosnake.groundtruth.generate`).
    """
    a = gt.arrays
    t, depths, field = a["drift_times_s"], a["drift_depths_um"], a["drift_um"]
    at_depth = np.stack([np.interp(yblk, depths, row) for row in field])  # (n_t, n_blocks)
    nb = n_batches(n_samples, NT)
    out = np.zeros((nb, len(yblk)))
    for b in range(nb):
        t0, t1 = b * NT / sample_rate, min((b + 1) * NT, n_samples) / sample_rate
        grid = np.linspace(t0, t1, 32)
        out[b] = [np.interp(grid, t, at_depth[:, k]).mean() for k in range(len(yblk))]
    return out


def rms_error_um(estimate, truth) -> float:
    """RMS difference of two displacement arrays after removing their mean difference."""
    diff = np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
