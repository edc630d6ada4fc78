"""Spike detection for drift estimation: threshold crossings, spatial maxima, centre-of-mass depths
and amplitudes.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from kilosnake.io.probe import Probe
from kilosnake.io.traces import n_batches, prefetching
from kilosnake.runtime.backend import Backend
from kilosnake.runtime.progress import Progress

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
_GATHER_ELEMENTS = 8 * 2**20


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
        out[c, : idx.size] = idx
    return out


def channel_neighbourhoods(probe: Probe) -> ChannelNeighbourhoods:
    """The neighbourhoods the detector uses."""
    return ChannelNeighbourhoods(
        neighbours_within(probe, NMS_RADIUS_UM), neighbours_within(probe, COM_RADIUS_UM)
    )


def detect_batch_spikes(
    X,
    owned: tuple[int, int],
    hood: ChannelNeighbourhoods,
    yc,
    threshold: float,
    be: Backend,
    unwhiten=None,
) -> dict:
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
    cand[: owned[0]] = False
    cand[owned[1] :] = False
    t, c = xp.nonzero(cand)
    if t.size:
        t, c = _spatial_maxima(A, peak_t, t, c, be.asarray(hood.suppress), xp)
        t, c = _drop_temporal_duplicates(t, c, xp)
    amp = A[t, c]
    heights, nbrs, valid = _neighbour_heights(X, t, c, be.asarray(hood.com), unwhiten, xp)
    depth = centre_of_mass(heights, valid, be.asarray(yc, xp.float64)[nbrs], xp)
    return {
        "t": be.to_host(t).astype(np.int64),
        "channel": be.to_host(c).astype(np.int64),
        "depth": be.to_host(depth),
        "amplitude": be.to_host(amp).astype(np.float32),
    }


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
        rows = X[tt[i : i + step]]  # (m, W, Nchan)
        cols = xp.moveaxis(unwhiten[:, nbrs[i : i + step]], 0, 1)  # (m, Nchan, K)
        heights[i : i + step] = -xp.matmul(rows, cols).min(axis=1)
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


def detect_spikes(
    reader, threshold: float, be: Backend, unwhiten=None, progress_every: int = 50
) -> dict:
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

    reader = prefetching(
        reader,
        [
            (b * reader.NT - margin, min((b + 1) * reader.NT, reader.n_samples) + margin)
            for b in range(nb)
        ],
        be,
    )
    for b in range(nb):
        start, stop = b * reader.NT, min((b + 1) * reader.NT, reader.n_samples)
        X = be.asarray(reader.read(start - margin, stop + margin))
        d = detect_batch_spikes(
            X, (margin, margin + stop - start), hood, reader.probe.yc, threshold, be, unwhiten
        )
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
