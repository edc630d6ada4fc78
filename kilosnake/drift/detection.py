"""Spike detection for drift estimation: threshold crossings, spatial maxima, centre-of-mass depths
and amplitudes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging

import numpy as np

from kilosnake.drift.suitability import registration_check
from kilosnake.io.prefetch import stream_marker, use_device_and_own_stream, wait_for_marker
from kilosnake.io.probe import Probe
from kilosnake.io.store import open_store, write_array
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


def channel_neighbourhoods(probe: Probe, be: Backend | None = None) -> ChannelNeighbourhoods:
    """The neighbourhoods the detector uses (arrays of ``be`` when given: moved to a GPU once,
    not with every batch)."""
    hood = ChannelNeighbourhoods(
        neighbours_within(probe, NMS_RADIUS_UM), neighbours_within(probe, COM_RADIUS_UM)
    )
    if be is None:
        return hood
    return ChannelNeighbourhoods(be.asarray(hood.suppress), be.asarray(hood.com))


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
    hood = channel_neighbourhoods(reader.probe, be)
    yc = be.asarray(reader.probe.yc, be.xp.float64)
    unwhiten = None if unwhiten is None else be.asarray(unwhiten, be.xp.float32)
    margin = DETECT_MARGIN
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
        parts.append(batch_detections(X, b, start, stop, hood, yc, threshold, be, unwhiten))
        n_found += parts[-1]["time"].size
        progress.update(spikes=n_found)
    progress.close()
    reader.close()
    return joined_detections(parts)


#: samples of context each side of a batch that its detections need (the peak window, then the
#: centre-of-mass window around a peak at the batch's edge)
DETECT_MARGIN = DETECT_HALF_WINDOW + COM_HALF_WINDOW + 1
#: the per-spike arrays of the detections, and their types
DETECTION_DTYPES = {
    "time": np.int64,
    "channel": np.int64,
    "depth": np.float32,
    "amplitude": np.float32,
    "batch": np.int32,
}


def batch_detections(X, b: int, start: int, stop: int, hood, yc, threshold, be, unwhiten) -> dict:
    """The detections of batch ``b`` (samples ``[start, stop)``) from ``X``, its whitened
    samples ``[start - DETECT_MARGIN, stop + DETECT_MARGIN)`` (zero outside the recording)."""
    m = DETECT_MARGIN
    d = detect_batch_spikes(X, (m, m + stop - start), hood, yc, threshold, be, unwhiten)
    d["time"] = d.pop("t") + (start - m)
    d["batch"] = np.full(d["time"].size, b, dtype=np.int32)
    return d


def joined_detections(parts: list) -> dict:
    """The detections of consecutive batches as one set of arrays (:data:`DETECTION_DTYPES`)."""
    if not parts:
        return {k: np.zeros(0, dtype) for k, dtype in DETECTION_DTYPES.items()}
    out = {k: np.concatenate([p[k] for p in parts]) for k in DETECTION_DTYPES}
    out["depth"] = out["depth"].astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# detection while preprocessing writes the traces

#: the group of ``preprocessed.zarr`` that holds the detections made while preprocessing
DETECTIONS_GROUP = "drift_detections"


class DetectionWhilePreprocessing:
    """The drift stage's detections made from the whitened batches as preprocessing writes them
    (a :class:`kilosnake.preprocess.traces.BatchObserver`), so that the drift stage need not
    read the traces back: the same values as :func:`detect_spikes` on the finished store.

    Batch ``b``'s detections need the edges of batches ``b - 1`` and ``b + 1``: each batch is
    searched once the next one is whitened, and a block of a scattered run also whitens the
    batch before and after its own (not written).

    Parameters
    ----------
    whitening_path : path
        The whitening store: spikes are localised on filtered waveforms
        (:func:`unwhitening_matrix`), as the drift stage does.
    threshold : float
        ``spkTh_drift``.
    """

    def __init__(self, whitening_path, threshold: float):
        self.whitening_path = whitening_path
        self.threshold = float(threshold)
        self.enabled = False
        self.parts: list[dict] = []
        self._held: dict = {}

    def start(self, probe, NT: int, n_samples: int, scaleproc: float, be: Backend) -> None:
        self.probe, self.NT, self.n_samples = probe, int(NT), int(n_samples)
        self.scaleproc, self.be = float(scaleproc), be
        self.enabled = registration_check(probe, 1)[0]  # else the drift stage detects nothing
        if not self.enabled:
            return
        self.hood = channel_neighbourhoods(probe, be)
        self.yc = be.asarray(probe.yc, be.xp.float64)
        wg = open_store(self.whitening_path)
        whitening, covariance = wg["whitening"][...], wg["covariance"][...]
        self.n_batches = n_batches(self.n_samples, self.NT)
        # batches are searched on a thread beside the preprocessing loop, on a CUDA stream of
        # its own: on the default stream each thread's waits would also wait for the other's work
        self._searching = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="drift-detect", initializer=use_device_and_own_stream()
        )
        # its first task: the pseudo-inverse the searches localise with (tenths of a second at
        # 384 channels), made while the first batches are whitened
        self._unwhiten = self._searching.submit(_unwhitening_on, be, whitening, covariance)
        self._pending: list[concurrent.futures.Future] = []

    def batches(self, owned: range, n_batches: int) -> range:
        if not self.enabled or len(owned) == 0:
            return owned
        return range(max(owned.start - 1, 0), min(owned.stop + 1, n_batches))

    def observe(self, b: int, whitened, owned: bool) -> None:
        if not self.enabled:
            return
        self._held[b] = (whitened, owned)
        if b - 1 in self._held and self._held[b - 1][1]:
            self._search(b - 1)
        self._held.pop(b - 2, None)

    def write(self, group) -> None:
        if not self.enabled:
            return
        last = max(self._held, default=None)
        if last is not None and self._held[last][1]:  # the recording's last batch
            self._search(last)
        self._held.clear()
        self._wait(0)
        self._searching.shutdown()
        found = joined_detections(self.parts)
        det = group.create_group(DETECTIONS_GROUP)
        det.attrs.update(threshold=self.threshold, localised_on="filtered")
        for name, values in found.items():
            write_array(det, name, values)
        logger.info(
            "drift detections: %d spikes (spkTh_drift=%g)", found["time"].size, self.threshold
        )

    #: batches searched at most at once on the background thread
    IN_FLIGHT = 2

    def _search(self, b: int) -> None:
        """Search batch ``b`` on the background thread, which also builds its window from the
        batch and its neighbours (:func:`detection_window`): those are made on this thread's
        stream, which the search waits for."""
        start, stop = b * self.NT, min((b + 1) * self.NT, self.n_samples)
        own = self._held[b][0]
        before = self._neighbour(b - 1) if b > 0 else None
        after = self._neighbour(b + 1) if b + 1 < self.n_batches else None
        self._wait(self.IN_FLIGHT - 1)
        window = (own, before, after, self.scaleproc, self.be.xp)
        args = (b, start, stop, self.hood, self.yc, self.threshold, self.be)
        marker = stream_marker(self.be)
        self._pending.append(
            self._searching.submit(_detections_after, marker, window, args, self._unwhiten)
        )

    def _wait(self, at_most: int) -> None:
        """Collect finished searches, in batch order, until ``at_most`` are left running."""
        while len(self._pending) > at_most:
            self.parts.append(self._pending.pop(0).result())

    def _neighbour(self, b: int):
        if b not in self._held:
            raise RuntimeError(f"batch {b} was not whitened before its neighbour was searched")
        return self._held[b][0]


def detection_window(own, before, after, scaleproc: float, xp):
    """A batch with :data:`DETECT_MARGIN` samples each side from its neighbours (``before``,
    ``after``: None at the recording's edges, zeros there), in whitened units, as
    :class:`kilosnake.io.traces.PreprocessedReader` reads it from the store."""
    m, n = DETECT_MARGIN, own.shape[0]
    X = xp.zeros((n + 2 * m, own.shape[1]), dtype=xp.int16)
    X[m : m + n] = own
    if before is not None:
        k = min(m, before.shape[0])
        X[m - k : m] = before[before.shape[0] - k :]
    if after is not None:
        k = min(m, after.shape[0])
        X[m + n : m + n + k] = after[:k]
    return X.astype(xp.float32) / xp.float32(scaleproc)


def _unwhitening_on(be: Backend, whitening, covariance):
    """:func:`unwhitening_matrix` as a float32 array of ``be``."""
    return be.asarray(unwhitening_matrix(whitening, covariance), be.xp.float32)


def _detections_after(marker, window: tuple, args: tuple, unwhiten):
    """:func:`batch_detections` of the :func:`detection_window` of ``window`` (``unwhiten``: a
    future of the matrix), once the work ``marker`` marks is done (the batches the window is
    built from are made on another stream; they are released after the search has copied its
    results back)."""
    wait_for_marker(marker)
    return batch_detections(detection_window(*window), *args, unwhiten.result())


def stored_detections(group, threshold: float, localised_on: str) -> dict | None:
    """The detections a preprocessed store holds (:class:`DetectionWhilePreprocessing`) when
    they were made with ``threshold`` and localised on ``localised_on`` waveforms, else None."""
    if group is None or DETECTIONS_GROUP not in group:
        return None
    det = group[DETECTIONS_GROUP]
    made = (float(det.attrs.get("threshold", float("nan"))), det.attrs.get("localised_on"))
    if made != (float(threshold), localised_on):
        return None
    return {k: np.asarray(det[k][...], dtype=dtype) for k, dtype in DETECTION_DTYPES.items()}
