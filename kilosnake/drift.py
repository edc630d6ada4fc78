"""Drift estimation and correction: Kilosort 2.5 registration as its own stage.

The ``drift`` stage reads ``preprocessed.zarr`` (and the whitening matrix of ``whitening.zarr``)
and writes ``drift.zarr`` plus a picture (:mod:`kilosnake.drift_plot`):

1. **Spike detection** (:func:`detect_batch_spikes`): negative peaks of the whitened traces
   above ``spkTh_drift`` (whitened SD) that are the largest within ±``DETECT_HALF_WINDOW``
   samples on their channel and within ``NMS_RADIUS_UM`` on their shank. Amplitude = the peak
   height. Depth = centre of mass of the neighbours' (within ``COM_RADIUS_UM``) negative peak
   heights above a noise and a relative floor, measured on the *filtered* waveforms (whitened
   data times the inverse whitening matrix, :func:`unwhitening_matrix`). This thresholded
   detector needs no waveform prototypes (so the stage does not wait for the ``detect`` stage).
   Localising on filtered rather than whitened waveforms is what makes the estimate accurate:
   local whitening sharpens and distorts the spatial footprint, so whitened centres of mass
   move 1.1-1.3 µm per µm of drift for many units, and the RMS error on the ``drift`` preset
   is 2.5 times larger.
2. **Fingerprints** (:func:`depth_amplitude_histograms`): per batch and shank, a histogram of
   spike depth (``DEPTH_BIN_UM`` bins) × log amplitude (``N_AMP_BINS`` bins from ``spkTh_drift``
   to ``AMP_MAX``), as ``log2(1 + count)``.
3. **Registration** (:func:`register_fingerprints`): ``RIGID_ITERATIONS`` rounds of rigid integer
   alignment of every batch to a target (first one batch, then the mean of the aligned batches),
   then per depth block (one for ``nblocks = 1``, ``2·nblocks − 1`` half-overlapping ones
   otherwise) a correlation over ±``FINE_MAX_SHIFT_BINS`` bins, smoothed across batches, blocks
   and shifts, upsampled ×``UPSAMPLE`` by kriging and maximised: the sub-bin shift. Batches with
   fewer than ``MIN_SPIKES_PER_BATCH`` detections get their shift interpolated in time.
4. **Correction** (:class:`DriftCorrectedReader`, applied while later stages read): per batch,
   the block shifts are interpolated linearly to every channel's depth (constant beyond the
   outer blocks) and the channels are resampled by kriging with a Gaussian kernel of length
   ``sig_datashift`` (:class:`KrigingInterpolator`). Each batch's matrix is applied to the
   samples that batch owns, so a window across a batch edge is corrected piecewise.

Sign convention: ``dshift > 0`` means the units sit at *larger* y than in the reference (their
median position over the recording); the corrected depth of a spike is ``depth − dshift``.

Drift correction is switched off (identity: one block, zero displacement, ``enabled = False``
and a ``reason``) for ``nblocks = 0``, for probes with a shank shorter than ``MIN_EXTENT_UM`` or
with fewer than ``MIN_ROWS_PER_100UM`` distinct contact depths per 100 µm
(:func:`shank_supports_registration`), and when a shank has no batch with enough spikes.

``drift.zarr`` (every shank registered on its own; ``n_blocks`` = 1 for ``nblocks`` ≤ 1 or when
off, else ``2·nblocks − 1``):

============================  ==============================  ==========================
array                         shape, dtype                    content
============================  ==============================  ==========================
``dshift``                    (n_shanks, n_batches, n_blocks)  displacement, µm
                              float64
``yblk``                      (n_shanks, n_blocks) float64    block centres, µm
``shank_ids``                 (n_shanks,) float64             ``kcoords`` of each shank
``batch_time_s``              (n_batches,) float64            batch centre times, s
``spikes_per_batch``          (n_shanks, n_batches) int64     detections per batch
``spikes/time``               (n,) int64                      peak sample
``spikes/channel``            (n,) int32                      peak channel (probe order)
``spikes/depth``              (n,) float32                    depth as detected, µm
``spikes/amplitude``          (n,) float32                    peak height, whitened SD
``spikes/batch``              (n,) int32                      batch
``spikes/shank``              (n,) int32                      row of ``shank_ids``
============================  ==============================  ==========================

Attributes: ``enabled``, ``reason``, ``NT``, ``n_samples``, ``sample_rate``, ``n_batches``,
``nblocks``, ``n_blocks``, ``kernel``, ``sig_datashift``, ``ridge``, ``spkTh_drift``,
``depth_bin_um``, ``localisation`` and the usual provenance. An external motion estimate can be
used instead by writing ``dshift``, ``yblk``, ``shank_ids`` and the attributes ``enabled``,
``NT``, ``n_samples`` (and optionally ``sig_datashift``, ``kernel``) in this layout.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path

import numpy as np

from .backend import Backend, cpu_backend
from .errors import KilosnakeError
from .probe import Probe
from .progress import Progress
from .store import open_store, write_array, writing_store

logger = logging.getLogger(__name__)

# --- detection --------------------------------------------------------------------------------
#: a peak must be the largest on its channel within ± this many samples
DETECT_HALF_WINDOW = 20
#: ... and the largest of its shank within this distance (µm)
NMS_RADIUS_UM = 100.0
#: channels within this distance of the peak channel enter the centre of mass (µm)
COM_RADIUS_UM = 70.0
#: each channel's peak height is taken within ± this many samples of the detection
COM_HALF_WINDOW = 5
#: centre-of-mass weights: height minus this (noise SD) ...
COM_FLOOR_ABS = 1.5
#: ... minus this fraction of the largest neighbour height
COM_FLOOR_REL = 0.2
#: float32 elements of scratch per chunk of detections when un-whitening their neighbours
_GATHER_ELEMENTS = 8 * 2 ** 20
# --- fingerprints ------------------------------------------------------------------------------
DEPTH_BIN_UM = 5.0
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
# --- correction --------------------------------------------------------------------------------
KRIGING_RIDGE = 0.01
KERNELS = ("exponential", "gaussian")
#: chosen by measurement (benchmarks/drift_accuracy.py --kernels): on whitened synthetic
#: footprints moved by 2.5-15 um the Gaussian kernel leaves half the waveform error of the
#: exponential one (0.10 vs 0.18 relative) and keeps white noise at 70-99 % of its variance
#: (exponential: 38-82 %)
KRIGING_KERNEL = "gaussian"
# --- when registration is meaningful -------------------------------------------------------
MIN_EXTENT_UM = 200.0
MIN_ROWS_PER_100UM = 3.0


# --------------------------------------------------------------------------------------------
# can this probe be registered?


def distinct_rows(y, tolerance_um: float = 1.0) -> np.ndarray:
    """Sorted distinct contact depths, merging depths closer than ``tolerance_um``."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    if y.size == 0:
        return y
    keep = np.concatenate([[True], np.diff(y) > tolerance_um])
    return y[keep]


def shank_supports_registration(y) -> tuple[bool, str]:
    """Whether contacts at depths ``y`` (one shank) allow a meaningful drift estimate.

    Registration needs a vertical extent of at least :data:`MIN_EXTENT_UM` (units must be able to
    move several bins and still be seen) and at least :data:`MIN_ROWS_PER_100UM` distinct contact
    depths per 100 µm (the interpolation across channels needs contacts closer than the kriging
    length scale; Neuropixels 1.0 has 5, 2.0 has 6.7).

    Returns
    -------
    ok : bool
    reason : str
        Why not (empty when ``ok``).
    """
    rows = distinct_rows(y)
    extent = float(rows[-1] - rows[0]) if rows.size else 0.0
    if extent < MIN_EXTENT_UM:
        return False, (f"vertical extent {extent:.0f} um is below {MIN_EXTENT_UM:.0f} um "
                       "(tetrode, single row or short probe)")
    density = 100.0 * (rows.size - 1) / extent
    if density < MIN_ROWS_PER_100UM:
        return False, (f"{density:.1f} distinct contact rows per 100 um, below "
                       f"{MIN_ROWS_PER_100UM:g} (contacts too sparse to interpolate across)")
    return True, ""


def registration_check(probe: Probe, nblocks: int) -> tuple[bool, str]:
    """Whether the drift stage runs at all, and why not."""
    if nblocks == 0:
        return False, "nblocks = 0 (drift correction switched off in the config)"
    for shank in shank_ids(probe):
        ok, reason = shank_supports_registration(probe.yc[probe.kcoords == shank])
        if not ok:
            return False, f"shank {shank:g}: {reason}"
    return True, ""


def shank_ids(probe: Probe) -> np.ndarray:
    """Distinct shank ids of the probe, sorted."""
    return np.unique(probe.kcoords)


# --------------------------------------------------------------------------------------------
# spike detection


@dataclasses.dataclass(frozen=True)
class ChannelNeighbourhoods:
    """Same-shank channel neighbourhoods of every channel (rows padded with −1)."""

    suppress: np.ndarray  # (Nchan, K1) channels within NMS_RADIUS_UM
    com: np.ndarray  # (Nchan, K2) channels within COM_RADIUS_UM


def neighbours_within(probe: Probe, radius_um: float) -> np.ndarray:
    """(Nchan, K) same-shank channels within ``radius_um`` of each channel, padded with −1."""
    pos = probe.positions
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    near = (d <= radius_um) & (probe.kcoords[:, None] == probe.kcoords[None, :])
    out = np.full((probe.n_channels, int(near.sum(1).max())), -1, dtype=np.int64)
    for c in range(probe.n_channels):
        idx = np.flatnonzero(near[c])
        out[c, :idx.size] = idx
    return out


def channel_neighbourhoods(probe: Probe) -> ChannelNeighbourhoods:
    """The neighbourhoods the detector uses."""
    return ChannelNeighbourhoods(neighbours_within(probe, NMS_RADIUS_UM),
                                 neighbours_within(probe, COM_RADIUS_UM))


def detect_batch_spikes(X, owned: tuple[int, int], hood: ChannelNeighbourhoods, yc,
                        threshold: float, be: Backend, unwhiten=None) -> dict:
    """Spatio-temporally isolated negative peaks of one whitened batch.

    Parameters
    ----------
    X : (T, Nchan) array
        Whitened traces (backend array), including read margins.
    owned : (int, int)
        Sample range of ``X`` the batch owns; peaks outside it are dropped.
    hood : ChannelNeighbourhoods
    yc : (Nchan,) array
        Channel depths (µm).
    threshold : float
        Minimum peak height (whitened SD).
    be : Backend
    unwhiten : (Nchan, Nchan) array, optional
        Maps whitened samples back to filtered ones (``X @ unwhiten``), in units of the noise
        SD; the centre of mass is then taken on the filtered waveforms (see
        :func:`unwhitening_matrix`). Without it, on the whitened ones.

    Returns
    -------
    dict
        Host arrays ``t`` (index into ``X``), ``channel``, ``depth`` (µm), ``amplitude``.
    """
    xp = be.xp
    A = -X
    peak_t = be.ndimage.maximum_filter1d(A, 2 * DETECT_HALF_WINDOW + 1, axis=0, mode="constant")
    cand = (A == peak_t) & (A > threshold)
    cand[:owned[0]] = False
    cand[owned[1]:] = False
    t, c = xp.nonzero(cand)
    if t.size:
        t, c = _spatial_maxima(A, peak_t, t, c, be.asarray(hood.suppress), xp)
        t, c = _drop_temporal_duplicates(t, c, xp)
    amp = A[t, c]
    heights, nbrs, valid = _neighbour_heights(X, t, c, be.asarray(hood.com), unwhiten, xp)
    depth = centre_of_mass(heights, valid, be.asarray(yc, xp.float64)[nbrs], xp)
    return {"t": be.to_host(t).astype(np.int64), "channel": be.to_host(c).astype(np.int64),
            "depth": be.to_host(depth), "amplitude": be.to_host(amp).astype(np.float32)}


def _spatial_maxima(A, peak_t, t, c, nbrs, xp):
    """Keep candidates larger than every neighbour's running maximum (ties: lowest channel)."""
    others = nbrs[c]  # (n, K), −1 = padding
    others = xp.where(others < 0, c[:, None], others)
    vals = peak_t[t[:, None], others]
    own = A[t, c][:, None]
    beaten = (vals > own) | ((vals == own) & (others < c[:, None]))
    keep = ~beaten.any(axis=1)
    return t[keep], c[keep]


def _drop_temporal_duplicates(t, c, xp):
    """Of equal-height peaks on one channel within the window, keep the first."""
    order = xp.lexsort(xp.stack([t, c]))
    t, c = t[order], c[order]
    dup = xp.zeros(t.shape, dtype=bool)
    dup[1:] = (c[1:] == c[:-1]) & (t[1:] - t[:-1] <= DETECT_HALF_WINDOW)
    t, c = t[~dup], c[~dup]
    order = xp.lexsort(xp.stack([c, t]))
    return t[order], c[order]


def _neighbour_heights(X, t, c, com_nbrs, unwhiten, xp):
    """Negative peak height of every neighbour of each detection, within ±COM_HALF_WINDOW.

    Returns
    -------
    heights : (n, K) array
    nbrs : (n, K) int array
        Neighbour channels (padding replaced by the peak channel).
    valid : (n, K) bool array
        False on padding.
    """
    nbrs = com_nbrs[c]  # (n, K), −1 = padding
    valid = nbrs >= 0
    nbrs = xp.where(valid, nbrs, c[:, None])
    offsets = xp.arange(-COM_HALF_WINDOW, COM_HALF_WINDOW + 1)
    tt = xp.clip(t[:, None] + offsets[None, :], 0, X.shape[0] - 1)  # (n, W)
    if unwhiten is None:
        heights = -X[tt[:, :, None], nbrs[:, None, :]].min(axis=1)  # (n, K)
        return heights, nbrs, valid
    # filtered = whitened @ unwhiten, evaluated only on the neighbours of each detection
    heights = xp.zeros(nbrs.shape, dtype=X.dtype)
    step = max(1, _GATHER_ELEMENTS // (X.shape[1] * nbrs.shape[1]))
    for i in range(0, t.shape[0], step):
        rows = X[tt[i:i + step]]  # (m, W, Nchan)
        cols = xp.moveaxis(unwhiten[:, nbrs[i:i + step]], 0, 1)  # (m, Nchan, K)
        heights[i:i + step] = -xp.matmul(rows, cols).min(axis=1)
    return heights, nbrs, valid


def centre_of_mass(heights, valid, y, xp):
    """Depth from neighbour heights: centre of mass above a noise and a relative floor.

    Weights are ``max(h − COM_FLOOR_ABS − COM_FLOOR_REL · max(h), 0)``: the absolute floor removes
    the positive bias that noise gives the maximum over a window, the relative one the flat
    tails that pull the estimate towards the middle of the neighbourhood.
    """
    if heights.shape[0] == 0:
        return xp.zeros(0, dtype=xp.float64)
    h = xp.where(valid, heights, 0).astype(xp.float64)
    floor = COM_FLOOR_ABS + COM_FLOOR_REL * h.max(axis=1, keepdims=True)
    w = xp.maximum(h - floor, 0) * valid
    depth = (w * y).sum(1) / xp.maximum(w.sum(1), 1e-12)
    fallback = y[:, 0]  # no weight left (tiny spike): the peak channel's depth
    return xp.where(w.sum(1) > 0, depth, fallback)


def unwhitening_matrix(whitening, covariance) -> np.ndarray:
    """``U`` with ``filtered ≈ whitened @ U``, scaled to units of the median noise SD.

    ``whitened = filtered @ whitening / scaleproc`` up to the int16 scaling, so ``U`` is the
    pseudo-inverse of the whitening matrix times the noise SD of the typical channel (from the
    diagonal of ``covariance``).
    """
    sd = float(np.sqrt(np.median(np.diag(covariance))))
    return (np.linalg.pinv(np.asarray(whitening, np.float64), rcond=1e-6) / sd).astype(np.float32)


def detect_spikes(reader, threshold: float, be: Backend, unwhiten=None,
                  progress_every: int = 50) -> dict:
    """Detections of every batch of ``reader`` (see :func:`detect_batch_spikes`).

    Returns
    -------
    dict
        Host arrays ``time`` (sample, int64), ``channel``, ``depth`` (µm, float32),
        ``amplitude`` (whitened SD, float32), ``batch`` (int32), sorted by time.
    """
    hood = channel_neighbourhoods(reader.probe)
    unwhiten = None if unwhiten is None else be.asarray(unwhiten, be.xp.float32)
    margin = DETECT_HALF_WINDOW + COM_HALF_WINDOW + 1
    nb = n_batches(reader.n_samples, reader.NT)
    parts, n_found = [], 0
    progress = Progress(nb, "drift detection", logger, every_n=progress_every)
    from .sorting.batches import prefetching

    reader = prefetching(reader, [(b * reader.NT - margin,
                                   min((b + 1) * reader.NT, reader.n_samples) + margin)
                                  for b in range(nb)], be)
    for b in range(nb):
        start, stop = b * reader.NT, min((b + 1) * reader.NT, reader.n_samples)
        X = be.asarray(reader.read(start - margin, stop + margin))
        d = detect_batch_spikes(X, (margin, margin + stop - start), hood, reader.probe.yc,
                                threshold, be, unwhiten)
        d["time"] = d.pop("t") + (start - margin)
        d["batch"] = np.full(d["time"].size, b, dtype=np.int32)
        parts.append(d)
        n_found += d["time"].size
        progress.update(spikes=n_found)
    progress.close()
    reader.close()
    keys = ("time", "channel", "depth", "amplitude", "batch")
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    out["depth"] = out["depth"].astype(np.float32)
    return out


def n_batches(n_samples: int, NT: int) -> int:
    """Batches of ``NT`` samples covering the recording (the last may be short)."""
    return int(math.ceil(n_samples / NT))


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


def depth_amplitude_histograms(depth, amplitude, batch, n_batch: int, edges,
                               threshold: float) -> np.ndarray:
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
            cc[:, i] = (F[:, lo + s:hi + s] * target[None, lo:hi]).sum(axis=(1, 2))
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
    kxx = np.exp(-((x[:, None] - x[None, :]) ** 2) / sigma ** 2)
    kyx = np.exp(-((xu[:, None] - x[None, :]) ** 2) / sigma ** 2)
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


# --------------------------------------------------------------------------------------------
# the whole estimate


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


def empty_spikes() -> dict:
    """The detection arrays with no detection."""
    return {"time": np.zeros(0, np.int64), "channel": np.zeros(0, np.int32),
            "depth": np.zeros(0, np.float32), "amplitude": np.zeros(0, np.float32),
            "batch": np.zeros(0, np.int32), "shank": np.zeros(0, np.int32)}


def identity_estimate(probe: Probe, NT: int, n_samples: int, sample_rate: float,
                      reason: str, spikes: dict | None = None) -> DriftEstimate:
    """The estimate of a recording whose drift is not corrected: one block, zero shift."""
    ids = shank_ids(probe)
    nb = n_batches(n_samples, NT)
    yblk = np.array([[np.median(probe.yc[probe.kcoords == s])] for s in ids])
    spikes = empty_spikes() if spikes is None else spikes
    counts = np.zeros((ids.size, nb), np.int64)
    for k in range(ids.size):
        counts[k] = np.bincount(spikes["batch"][spikes["shank"] == k], minlength=nb)[:nb]
    return DriftEstimate(False, reason, int(NT), int(n_samples), float(sample_rate), ids,
                         np.zeros((ids.size, nb, 1)), yblk, spikes, counts)


def estimate_drift(reader, p: dict, be: Backend, unwhiten=None) -> DriftEstimate:
    """Detect spikes and register every shank of ``reader``'s recording.

    Parameters
    ----------
    reader : PreprocessedReader
    p : dict
        ``nblocks``, ``spkTh_drift``.
    be : Backend
    unwhiten : (Nchan, Nchan) array, optional
        See :func:`unwhitening_matrix`; spikes are localised on the filtered (not whitened)
        waveforms when given, which makes depths follow the units linearly.

    Returns
    -------
    DriftEstimate
        Disabled (zero shift, ``reason`` set) when ``nblocks = 0``, when the probe cannot be
        registered (:func:`registration_check`) or when a shank has no batch with
        :data:`MIN_SPIKES_PER_BATCH` detections.
    """
    nblocks = int(p["nblocks"])
    geometry = (reader.probe, reader.NT, reader.n_samples, reader.sample_rate)
    ok, reason = registration_check(reader.probe, nblocks)
    if not ok:
        logger.warning("drift correction off: %s", reason)
        return identity_estimate(*geometry, reason)
    threshold = float(p["spkTh_drift"])
    if unwhiten is None:
        logger.info("no whitening matrix given: spikes are localised on whitened waveforms")
    spikes = detect_spikes(reader, threshold, be, unwhiten)
    probe = reader.probe
    ids = shank_ids(probe)
    spikes["channel"] = spikes["channel"].astype(np.int32)
    spikes["shank"] = np.searchsorted(ids, probe.kcoords[spikes["channel"]]).astype(np.int32)
    nb = n_batches(reader.n_samples, reader.NT)
    logger.info("drift detection: %d spikes in %d batches (median %.0f per batch)",
                spikes["time"].size, nb, np.median(np.bincount(spikes["batch"], minlength=nb)))
    dshift, yblk, counts = [], [], []
    for k, s in enumerate(ids):
        on = spikes["shank"] == k
        result = register_shank(spikes["depth"][on], spikes["amplitude"][on],
                                spikes["batch"][on], nb, probe.yc[probe.kcoords == s],
                                threshold, nblocks, be)
        if result is None:
            reason = (f"shank {s:g}: no batch has {MIN_SPIKES_PER_BATCH} spikes above "
                      f"spkTh_drift={threshold:g}")
            logger.warning("drift correction off: %s", reason)
            return identity_estimate(*geometry, reason, spikes)
        dshift.append(result[0])
        yblk.append(result[1])
        counts.append(result[2])
    est = DriftEstimate(True, "", reader.NT, reader.n_samples, reader.sample_rate, ids,
                        np.stack(dshift), np.stack(yblk), spikes, np.stack(counts),
                        "whitened" if unwhiten is None else "filtered")
    log_estimate_summary(est)
    return est


def register_shank(depth, amplitude, batch, nb: int, yc, threshold: float, nblocks: int,
                   be: Backend):
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
        logger.warning("%d of %d batches have fewer than %d drift spikes; their shifts are "
                       "interpolated in time", int((~usable).sum()), nb, MIN_SPIKES_PER_BATCH)
    shifts, centres = register_fingerprints(F, nblocks, usable, be)
    dshift = shifts * DEPTH_BIN_UM
    dshift -= np.median(dshift.mean(axis=1))
    yblk = edges[0] + centres * DEPTH_BIN_UM
    return dshift, yblk, counts


def log_estimate_summary(est: DriftEstimate) -> None:
    """One log line per shank: range of the displacement."""
    for k, s in enumerate(est.shank_ids):
        d = est.dshift[k]
        logger.info("shank %g: displacement %.1f to %.1f um (peak to peak %.1f um) over %d "
                    "batches, %d blocks", s, d.min(), d.max(), np.ptp(d), d.shape[0], d.shape[1])


# --------------------------------------------------------------------------------------------
# the store


STORE_ARRAYS = ("dshift", "yblk", "shank_ids", "batch_time_s", "spikes_per_batch")
SPIKE_ARRAYS = ("time", "channel", "depth", "amplitude", "batch", "shank")


def write_drift_store(out, est: DriftEstimate, p: dict, device: str) -> None:
    """Write ``drift.zarr`` (layout in the module docstring)."""
    nb = est.n_batches
    centres = (np.arange(nb) * est.NT + np.minimum((np.arange(nb) + 1) * est.NT,
                                                   est.n_samples)) / 2.0 / est.sample_rate
    attrs = {"enabled": bool(est.enabled), "reason": est.reason, "NT": int(est.NT),
             "n_samples": int(est.n_samples), "sample_rate": float(est.sample_rate),
             "n_batches": int(nb), "nblocks": int(p.get("nblocks", 0)),
             "n_blocks": int(est.dshift.shape[2]), "kernel": KRIGING_KERNEL,
             "sig_datashift": float(p.get("sig_datashift", 20.0)), "ridge": KRIGING_RIDGE,
             "spkTh_drift": float(p.get("spkTh_drift", 8.0)), "depth_bin_um": DEPTH_BIN_UM,
             "localisation": est.localisation,
             "sign": "dshift > 0: units sit at larger y than in the reference (the median "
                     "position); corrected depth = depth - dshift"}
    with writing_store(out, "drift", p, device, p.get("seed"), attrs) as g:
        write_array(g, "dshift", est.dshift.astype(np.float64))
        write_array(g, "yblk", est.yblk.astype(np.float64))
        write_array(g, "shank_ids", est.shank_ids.astype(np.float64))
        write_array(g, "batch_time_s", centres)
        write_array(g, "spikes_per_batch", est.spikes_per_batch.astype(np.int64))
        spikes = g.create_group("spikes")
        for name in SPIKE_ARRAYS:
            write_array(spikes, name, est.spikes[name], chunks=(max(1, min(
                est.spikes[name].size, 1 << 20)),))


def read_drift_store(path) -> DriftEstimate:
    """Inverse of :func:`write_drift_store` (spikes included when present)."""
    g = open_store(path)
    a = g.attrs
    spikes = empty_spikes()
    if "spikes" in g:
        spikes = {name: np.asarray(g["spikes"][name][...]) for name in SPIKE_ARRAYS}
    return DriftEstimate(bool(a["enabled"]), str(a.get("reason", "")), int(a["NT"]),
                         int(a["n_samples"]), float(a.get("sample_rate", 0.0)),
                         np.asarray(g["shank_ids"][...]), np.asarray(g["dshift"][...]),
                         np.asarray(g["yblk"][...]), spikes,
                         np.asarray(g["spikes_per_batch"][...]) if "spikes_per_batch" in g
                         else np.zeros(0), str(a.get("localisation", "none")))


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


def run_drift(preprocessed, whitening, out, plot_path, p: dict) -> None:
    """The ``drift`` stage: ``preprocessed.zarr`` (+ ``whitening.zarr``) → ``drift.zarr``, plot.

    Parameters
    ----------
    preprocessed, whitening : str or Path
        The preprocessed store and the whitening store (its matrix lets spikes be localised on
        filtered waveforms; pass None to localise on whitened ones).
    out : str or Path
        The store to write.
    plot_path : str or Path
        The PNG to write (displacement and spike rasters before and after correction).
    p : dict
        Resolved parameters of the drift stage, device and seed.
    """
    from .backend import get_backend
    from .drift_plot import plot_drift
    from .preprocess import PreprocessedReader

    be = get_backend(p["device"])
    reader = PreprocessedReader(preprocessed)
    unwhiten = None
    if whitening is not None:
        wg = open_store(whitening)
        unwhiten = unwhitening_matrix(wg["whitening"][...], wg["covariance"][...])
    est = estimate_drift(reader, p, be, unwhiten)
    write_drift_store(out, est, p, be.name)
    plot_drift(est, plot_path)


# --------------------------------------------------------------------------------------------
# correction: kriging interpolation across channels


def channel_shifts(dshift_batch, yblk, probe: Probe, shank_list) -> np.ndarray:
    """Displacement (µm) at every channel for one batch.

    Parameters
    ----------
    dshift_batch : (n_shanks, n_blocks) array
        Block displacements of the batch.
    yblk : (n_shanks, n_blocks) array
        Block centres.
    probe : Probe
    shank_list : (n_shanks,) array
        Shank id of each row of ``dshift_batch``.

    Returns
    -------
    (Nchan,) float64
        Linear interpolation between block centres, constant beyond the outer ones (no
        extrapolation, which would invent drift at the probe's ends).
    """
    out = np.zeros(probe.n_channels)
    for k, s in enumerate(shank_list):
        on = probe.kcoords == s
        out[on] = np.interp(probe.yc[on], yblk[k], dshift_batch[k])
    return out


def kriging_kernel(a, b, shank_a, shank_b, sig: float, kind: str = KRIGING_KERNEL):
    """Kernel between contact positions ``a`` (n, 2) and ``b`` (m, 2), zero across shanks.

    ``exponential``: ``exp(−|Δx|/σ − |Δy|/(1.5σ))`` (Kilosort 2.5); ``gaussian``:
    ``exp(−(Δx² + Δy²)/(2σ²))`` (Kilosort 4).
    """
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    if kind == "exponential":
        k = np.exp(-np.abs(dx) / sig - np.abs(dy) / (1.5 * sig))
    elif kind == "gaussian":
        k = np.exp(-(dx * dx + dy * dy) / (2 * sig * sig))
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, not {kind!r}")
    return k * (np.asarray(shank_a)[:, None] == np.asarray(shank_b)[None, :])


class KrigingInterpolator:
    """Matrices resampling the channels at positions moved along y.

    ``M(d) = I + (K(Y + d, Y) − K(Y, Y)) (K(Y, Y) + λI)⁻¹``, ``corrected = data @ M(d).T``: at
    every contact, the data at the contact's position moved by ``d``, so a unit that drifted by
    ``d`` is brought back to where it was. This is Kilosort's kriging matrix
    ``K(Y + d, Y)(K + λI)⁻¹`` plus the residual ``I − K(K + λI)⁻¹`` that the smooth
    interpolant cannot represent, kept in place: zero displacement is exactly the identity and
    the data are not smoothed where they are not moved.
    """

    def __init__(self, probe: Probe, sig: float, kind: str = KRIGING_KERNEL,
                 ridge: float = KRIGING_RIDGE):
        self.probe, self.sig, self.kind = probe, float(sig), kind
        pos = probe.positions
        self.kxx = kriging_kernel(pos, pos, probe.kcoords, probe.kcoords, self.sig, kind)
        self.inv_kxx = np.linalg.inv(self.kxx + ridge * np.eye(probe.n_channels))

    def matrix(self, shifts) -> np.ndarray:
        """``M`` (Nchan, Nchan) float64 for per-channel displacements ``shifts`` (µm)."""
        pos = self.probe.positions
        moved = pos + np.stack([np.zeros_like(shifts), np.asarray(shifts, np.float64)], axis=1)
        kyx = kriging_kernel(moved, pos, self.probe.kcoords, self.probe.kcoords, self.sig,
                             self.kind)
        return np.eye(self.probe.n_channels) + (kyx - self.kxx) @ self.inv_kxx


class DriftCorrectedReader:
    """Windows of the preprocessed traces with the drift taken out.

    Same interface as :class:`~kilosnake.preprocess.PreprocessedReader` (``read``,
    ``read_int16``, ``n_samples``, ``n_channels``, ``NT``, ``probe``, ``sample_rate``,
    ``scaleproc``). Every sample is multiplied by the kriging matrix
    (:class:`KrigingInterpolator`) of the batch that owns it: a window spanning several
    batches is cut at the batch edges and each piece gets its own batch's matrix, so a sample
    reads the same in every window. With the drift off (``enabled = False``) or zero
    displacement the arrays are exactly those of the plain reader.

    Parameters
    ----------
    preprocessed_path : str or Path
        ``preprocessed.zarr``.
    drift_path : str or Path
        ``drift.zarr`` (or any store with its ``dshift``, ``yblk``, ``shank_ids`` arrays and
        ``enabled``, ``NT``, ``n_samples`` attributes, e.g. an external motion estimate).
    backend : Backend, optional
        Where the matrix products run (default: the CPU); results are host arrays either way.
    sig : float, optional
        Kriging length scale (µm); default: the store's ``sig_datashift`` attribute.
    """

    #: batch matrices kept (a learning pass revisits batches)
    CACHE_SIZE = 8

    def __init__(self, preprocessed_path, drift_path, backend: Backend | None = None,
                 sig: float | None = None):
        from .preprocess import PreprocessedReader

        self.plain = PreprocessedReader(preprocessed_path)
        self.path, self.group, self.traces = self.plain.path, self.plain.group, self.plain.traces
        self.scaleproc, self.NT, self.sample_rate = (self.plain.scaleproc, self.plain.NT,
                                                     self.plain.sample_rate)
        self.n_samples, self.n_channels = self.plain.n_samples, self.plain.n_channels
        self.probe = self.plain.probe
        self.drift_path = Path(drift_path)
        g = open_store(drift_path)
        self.dshift = np.asarray(g["dshift"][...], np.float64)
        self.yblk = np.asarray(g["yblk"][...], np.float64)
        self.shank_ids = np.asarray(g["shank_ids"][...])
        self._check_matches(g.attrs)
        # zero displacement everywhere: nothing to move
        self.enabled = bool(g.attrs.get("enabled", False)) and bool(self.dshift.any())
        self.be = backend or cpu_backend()
        sig = float(g.attrs.get("sig_datashift", 20.0)) if sig is None else float(sig)
        kind = str(g.attrs.get("kernel", KRIGING_KERNEL))
        self.interpolator = KrigingInterpolator(self.probe, sig, kind) if self.enabled else None
        self._cache: dict[int, object] = {}

    def _check_matches(self, attrs) -> None:
        """Refuse a drift store made for other batches or another recording."""
        if int(attrs["NT"]) != self.NT or int(attrs["n_samples"]) != self.n_samples:
            raise KilosnakeError(
                f"drift store {str(self.drift_path)!r} was made for NT={attrs['NT']}, "
                f"n_samples={attrs['n_samples']}, but {str(self.path)!r} has NT={self.NT}, "
                f"n_samples={self.n_samples}; rerun the drift rule "
                "(snakemake --forcerun drift)")
        probe_shanks = np.unique(self.probe.kcoords)
        if not np.array_equal(np.sort(self.shank_ids), probe_shanks):
            raise KilosnakeError(f"drift store {str(self.drift_path)!r} describes shanks "
                                 f"{self.shank_ids.tolist()}, the probe has "
                                 f"{probe_shanks.tolist()}")
        expected = (self.shank_ids.size, n_batches(self.n_samples, self.NT))
        if self.dshift.shape[:2] != expected or self.yblk.shape != (expected[0],
                                                                     self.dshift.shape[2]):
            raise KilosnakeError(f"drift store {str(self.drift_path)!r}: dshift has shape "
                                 f"{self.dshift.shape} and yblk {self.yblk.shape}, expected "
                                 f"(n_shanks, n_batches, n_blocks) = {expected + ('n',)} and "
                                 "(n_shanks, n_blocks)")

    def batch_matrix(self, b: int):
        """``M.T`` of batch ``b`` (backend array, float32), or None when it does not move."""
        if b in self._cache:
            return self._cache[b]
        shifts = channel_shifts(self.dshift[:, b], self.yblk, self.probe, self.shank_ids)
        mt = None
        if shifts.any():
            mt = self.be.asarray(self.interpolator.matrix(shifts).T, self.be.xp.float32)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[b] = mt
        return mt

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) in whitened units (float32), drift-corrected."""
        x = self.plain.read(start, stop)
        if not self.enabled:
            return x
        return self.correct(x, start)

    def read_device(self, be: Backend, start: int, stop: int):
        """:meth:`read` as an array of ``be`` (the matrix products run there; the same values
        as :meth:`read` when ``be`` is the reader's backend)."""
        x = self.plain.read_device(be, start, stop)
        if not self.enabled:
            return x
        return self._apply_batch_matrices(x, start, lambda part, mt: part @ be.asarray(mt))

    def read_int16(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) drift-corrected, scaled and rounded like the stored traces."""
        if not self.enabled:
            return self.plain.read_int16(start, stop)
        y = np.rint(self.read(start, stop) * np.float32(self.scaleproc))
        return np.clip(y, -32768, 32767).astype(np.int16)

    def correct(self, x: np.ndarray, start: int) -> np.ndarray:
        """Apply each batch's matrix to the samples it owns (``x`` starts at sample ``start``)."""
        return self._apply_batch_matrices(
            x, start, lambda part, mt: self.be.to_host(self.be.asarray(part) @ mt))

    def _apply_batch_matrices(self, x, start: int, apply):
        """A copy of ``x`` (starting at sample ``start``) with ``apply(part, M.T)`` on the part
        of every batch that moves."""
        lo, hi = max(start, 0), min(start + x.shape[0], self.n_samples)
        out = x.copy()
        for b in range(lo // self.NT, (hi - 1) // self.NT + 1) if hi > lo else ():
            a, z = max(lo, b * self.NT) - start, min(hi, (b + 1) * self.NT) - start
            mt = self.batch_matrix(b)
            if mt is not None:
                out[a:z] = apply(x[a:z], mt)
        return out


def write_corrected_traces(reader: DriftCorrectedReader, out, p: dict | None = None,
                           device: str = "cpu") -> None:
    """Write the drift-corrected traces as a new ``preprocessed.zarr`` (same layout).

    The alternative to correcting on every read: one extra pass and a second copy of the
    traces on disk, after which later stages read with the plain reader.
    """
    from .preprocess import write_probe_arrays
    from .store import TRACE_CODEC, trace_chunks

    NT = reader.NT
    attrs = {k: reader.group.attrs[k] for k in reader.group.attrs
             if k not in ("complete", "stage", "kilosnake_version", "params", "device", "seed")}
    attrs["drift"] = str(reader.drift_path)
    with writing_store(out, "drift_apply", p or {}, device, (p or {}).get("seed"), attrs) as g:
        traces = g.create_array("traces", shape=(reader.n_samples, reader.n_channels),
                                dtype="int16", chunks=trace_chunks(NT, reader.n_channels),
                                compressors=TRACE_CODEC, fill_value=0,
                                dimension_names=("time", "channel"))
        write_probe_arrays(g, reader.probe)
        for start in range(0, reader.n_samples, NT):
            stop = min(start + NT, reader.n_samples)
            traces[start:stop] = reader.read_int16(start, stop)


def open_reader(preprocessed, drift=None, backend: Backend | None = None):
    """The reader later stages use: drift-corrected when a drift store is given."""
    from .preprocess import PreprocessedReader

    if drift is None:
        return PreprocessedReader(preprocessed)
    return DriftCorrectedReader(preprocessed, drift, backend)

# --------------------------------------------------------------------------------------------
# evaluation against a known displacement


def true_displacement_per_batch(gt: dict, NT: int, n_samples: int, sample_rate: float,
                                yblk) -> np.ndarray:
    """Mean true displacement over each batch at the depths ``yblk``, (n_batches, n_blocks) µm.

    ``gt`` holds ``drift_times_s``, ``drift_depths_um`` and ``drift_um`` (as written by
    :mod:`kilosnake.synth`).
    """
    t, depths, field = gt["drift_times_s"], gt["drift_depths_um"], gt["drift_um"]
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
