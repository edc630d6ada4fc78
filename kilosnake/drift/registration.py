"""Registration (Kilosort 2.5): depth x amplitude fingerprints per batch, rigid then block-wise
alignment to a reference batch.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

from kilosnake.io.drift_store import DEPTH_BIN_UM, DriftEstimate
from kilosnake.runtime.backend import Backend

logger = logging.getLogger(__name__)


# --- fingerprints ------------------------------------------------------------------------------
N_AMP_BINS = 20
AMP_MAX = 100.0
#: batches with fewer detections than this do not enter the registration (shift interpolated)
MIN_SPIKES_PER_BATCH = 20
# --- registration ------------------------------------------------------------------------------
RIGID_MAX_SHIFT_BINS = 15
RIGID_ITERATIONS = 10
FINE_MAX_SHIFT_BINS = 5
#: Gaussian SD of the correlation smoothing along (batch, block, shift). Kilosort uses 0.5
#: everywhere; 1 block (half a block's height) removes the single-block outliers of depths with
#: few units (drift_randomwalk preset, nblocks=5: max error 16.8 -> 2.2 um) and leaves the
#: non-rigid preset's error unchanged (1.31 um)
FINE_SMOOTHING = (0.5, 1.0, 0.5)
UPSAMPLE = 10
UPSAMPLE_SIGMA_BINS = 1.0
REFERENCE_BATCH_MAX = 300


# --------------------------------------------------------------------------------------------
# fingerprints


def depth_bin_edges(y) -> np.ndarray:
    """Depth bin edges (µm) covering contacts at ``y`` with two bins of slack at each end."""
    lo = float(np.min(y)) - 2 * DEPTH_BIN_UM
    n = int(math.ceil((float(np.max(y)) + 2 * DEPTH_BIN_UM - lo) / DEPTH_BIN_UM))
    return lo + DEPTH_BIN_UM * np.arange(n + 1)


def amplitude_bin(amplitude, threshold: float) -> np.ndarray:
    """Log-amplitude bin (0 .. N_AMP_BINS−1) from ``threshold`` to :data:`AMP_MAX`."""
    a = np.log10(np.clip(np.asarray(amplitude, np.float64), threshold, AMP_MAX - 1e-6))
    frac = (a - math.log10(threshold)) / (math.log10(AMP_MAX) - math.log10(threshold))
    return np.clip((frac * N_AMP_BINS).astype(np.int64), 0, N_AMP_BINS - 1)


def depth_amplitude_histograms(
    depth, amplitude, batch, n_batch: int, edges, threshold: float
) -> np.ndarray:
    """(n_batch, n_depth_bins, N_AMP_BINS) fingerprints ``log2(1 + count)``."""
    ny = len(edges) - 1
    yi = np.floor((np.asarray(depth, np.float64) - edges[0]) / DEPTH_BIN_UM).astype(np.int64)
    ok = (yi >= 0) & (yi < ny)
    ai = amplitude_bin(amplitude, threshold)
    flat = (np.asarray(batch, np.int64)[ok] * ny + yi[ok]) * N_AMP_BINS + ai[ok]
    counts = np.bincount(flat, minlength=n_batch * ny * N_AMP_BINS)
    return np.log2(1.0 + counts.reshape(n_batch, ny, N_AMP_BINS))


# --------------------------------------------------------------------------------------------
# registration


def shift_depth(F, shifts, xp):
    """``out[b, y] = F[b, y + shifts[b]]`` (zero outside), for integer shifts per batch."""
    nb, ny = F.shape[:2]
    y = xp.arange(ny)[None, :] + xp.asarray(shifts)[:, None]
    valid = (y >= 0) & (y < ny)
    out = F[xp.arange(nb)[:, None], xp.clip(y, 0, ny - 1)]
    return out * valid[..., None]


def shift_scores(F, target, max_shift: int, xp):
    """``cc[b, s] = Σ_{y, a} F[b, y + s] · target[y, a]`` for s in −max_shift..max_shift."""
    nb, ny = F.shape[:2]
    shifts = range(-max_shift, max_shift + 1)
    cc = xp.zeros((nb, 2 * max_shift + 1), dtype=F.dtype)
    for i, s in enumerate(shifts):
        lo, hi = max(0, -s), min(ny, ny - s)
        if hi > lo:
            cc[:, i] = (F[:, lo + s : hi + s] * target[None, lo:hi]).sum(axis=(1, 2))
    return cc


def rigid_alignment(F, reference: int, usable, be: Backend):
    """Integer rigid shifts (bins) aligning every batch's fingerprint to a common target.

    Parameters
    ----------
    F : (nb, ny, na) array
        Fingerprints with their depth mean removed.
    reference : int
        Batch that serves as the first target.
    usable : (nb,) bool array
        Batches that enter the target (enough spikes).
    be : Backend

    Returns
    -------
    shifts : (nb,) int array
        ``F[b, y + shifts[b]]`` is aligned with the target.
    target : (ny, na) array
        Mean of the aligned usable batches.
    """
    xp = be.xp
    shifts = xp.zeros(F.shape[0], dtype=xp.int64)
    target = F[reference]
    for _ in range(RIGID_ITERATIONS):
        cc = shift_scores(F, target, RIGID_MAX_SHIFT_BINS, xp)
        shifts = xp.argmax(cc, axis=1) - RIGID_MAX_SHIFT_BINS
        target = shift_depth(F, shifts, xp)[usable].mean(axis=0)
    return shifts, target


def depth_blocks(ny: int, nblocks: int) -> list[tuple[int, int]]:
    """Depth-bin ranges of the registration blocks.

    One block of every bin for ``nblocks = 1``; otherwise ``2·nblocks − 1`` half-overlapping
    blocks of ``ny // nblocks`` bins spread evenly over the depth range.
    """
    if nblocks <= 1:
        return [(0, ny)]
    size = max(1, ny // nblocks)
    n = 2 * nblocks - 1
    starts = np.round(np.linspace(0, ny - size, n)).astype(int)
    return [(int(s), int(s) + size) for s in starts]


@functools.lru_cache(maxsize=4)
def upsampling_matrix(max_shift: int, factor: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Kriging matrix from integer shifts to a grid ``factor`` times finer, and that grid."""
    x = np.arange(-max_shift, max_shift + 1, dtype=np.float64)
    xu = np.arange(-max_shift * factor, max_shift * factor + 1) / factor
    kxx = np.exp(-((x[:, None] - x[None, :]) ** 2) / sigma**2)
    kyx = np.exp(-((xu[:, None] - x[None, :]) ** 2) / sigma**2)
    return kyx @ np.linalg.inv(kxx + 0.01 * np.eye(x.size)), xu


def fine_block_shifts(F_aligned, target, blocks, be: Backend):
    """Sub-bin shift (bins) of every batch and block relative to the target.

    Returns
    -------
    (nb, n_blocks) float64 array
    """
    xp = be.xp
    nb = F_aligned.shape[0]
    cc = xp.zeros((nb, len(blocks), 2 * FINE_MAX_SHIFT_BINS + 1), dtype=xp.float64)
    for k, (lo, hi) in enumerate(blocks):
        masked = xp.zeros_like(target)
        masked[lo:hi] = target[lo:hi]
        cc[:, k] = shift_scores(F_aligned, masked, FINE_MAX_SHIFT_BINS, xp)
    cc = be.ndimage.gaussian_filter(cc, FINE_SMOOTHING, mode="nearest")
    up, grid = upsampling_matrix(FINE_MAX_SHIFT_BINS, UPSAMPLE, UPSAMPLE_SIGMA_BINS)
    ccu = cc @ be.asarray(up).T
    return be.asarray(grid)[xp.argmax(ccu, axis=2)]


def register_fingerprints(F, nblocks: int, usable, be: Backend):
    """Block shifts (bins) of every batch: rigid alignment then sub-bin block registration.

    Parameters
    ----------
    F : (nb, ny, na) array
        Fingerprints.
    nblocks : int
        1 = rigid, > 1 = non-rigid.
    usable : (nb,) bool array
        Batches with enough spikes; the others get shifts interpolated in time.
    be : Backend

    Returns
    -------
    shifts : (nb, n_blocks) float64 host array
        ``shifts > 0``: the batch's units sit at larger depths than in the target.
    block_centres : (n_blocks,) float64 host array
        Centres of the blocks in bins (fractional).
    """
    xp = be.xp
    F = be.asarray(F, xp.float64)
    F = F - F.mean(axis=1, keepdims=True)
    usable_h = np.asarray(usable, bool)
    usable_d = be.asarray(usable_h)
    reference = reference_batch(usable_h)
    rigid, target = rigid_alignment(F, reference, usable_d, be)
    aligned = shift_depth(F, rigid, xp)
    blocks = depth_blocks(F.shape[1], nblocks)
    fine = fine_block_shifts(aligned, target, blocks, be)
    shifts = be.to_host(rigid[:, None] + fine).astype(np.float64)
    shifts = fill_unusable_batches(shifts, usable_h)
    centres = np.array([(lo + hi) / 2.0 for lo, hi in blocks])
    return shifts, centres


def reference_batch(usable) -> int:
    """The first target: the usable batch nearest ``min(300, nb // 2)``."""
    wanted = min(REFERENCE_BATCH_MAX, len(usable) // 2)
    idx = np.flatnonzero(usable)
    return int(idx[np.argmin(np.abs(idx - wanted))])


def fill_unusable_batches(shifts, usable) -> np.ndarray:
    """Replace the shifts of batches without enough spikes by interpolation in time."""
    if usable.all():
        return shifts
    good = np.flatnonzero(usable)
    out = shifts.copy()
    for k in range(shifts.shape[1]):
        out[:, k] = np.interp(np.arange(len(usable)), good, shifts[good, k])
    return out


def register_shank(
    depth, amplitude, batch, nb: int, yc, threshold: float, nblocks: int, be: Backend
):
    """Register one shank's detections.

    Returns
    -------
    tuple or None
        ``dshift`` (nb, n_blocks) µm relative to the median position, ``yblk`` (n_blocks,) µm,
        spike counts per batch; None when no batch has :data:`MIN_SPIKES_PER_BATCH` spikes.
    """
    edges = depth_bin_edges(yc)
    F = depth_amplitude_histograms(depth, amplitude, batch, nb, edges, threshold)
    counts = np.bincount(np.asarray(batch, np.int64), minlength=nb)
    usable = counts >= MIN_SPIKES_PER_BATCH
    if not usable.any():
        return None
    if not usable.all():
        logger.warning(
            "%d of %d batches have fewer than %d drift spikes; their shifts are "
            "interpolated in time",
            int((~usable).sum()),
            nb,
            MIN_SPIKES_PER_BATCH,
        )
    shifts, centres = register_fingerprints(F, nblocks, usable, be)
    dshift = shifts * DEPTH_BIN_UM
    dshift -= np.median(dshift.mean(axis=1))
    yblk = edges[0] + centres * DEPTH_BIN_UM
    return dshift, yblk, counts


def corrected_depths(depth, batch, shank, est: DriftEstimate) -> np.ndarray:
    """Depth of each detection with its batch's displacement at that depth removed."""
    depth = np.asarray(depth, np.float64)
    out = depth.copy()
    if not est.enabled:
        return out
    key = np.asarray(shank, np.int64) * est.n_batches + np.asarray(batch, np.int64)
    for k in np.unique(key):
        s, b = divmod(int(k), est.n_batches)
        sel = key == k
        out[sel] -= np.interp(depth[sel], est.yblk[s], est.dshift[s, b])
    return out
