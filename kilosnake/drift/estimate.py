"""Drift estimation and correction: Kilosort 2.5 registration as its own stage.

The ``drift`` stage reads ``preprocessed.zarr`` (and the whitening matrix of ``whitening.zarr``)
and writes ``drift.zarr`` plus a picture (:mod:`kilosnake.drift.plot`):

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

import logging

import numpy as np

from kilosnake.drift.detection import detect_spikes, stored_detections, unwhitening_matrix
from kilosnake.drift.registration import MIN_SPIKES_PER_BATCH, register_shank
from kilosnake.drift.suitability import registration_check
from kilosnake.io.drift_store import DriftEstimate, empty_spikes, write_drift_store
from kilosnake.io.probe import Probe
from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader, n_batches
from kilosnake.runtime.backend import Backend, get_backend

logger = logging.getLogger(__name__)


def identity_estimate(
    probe: Probe,
    NT: int,
    n_samples: int,
    sample_rate: float,
    reason: str,
    spikes: dict | None = None,
) -> DriftEstimate:
    """The estimate of a recording whose drift is not corrected: one block, zero shift."""
    ids = probe.shank_ids()
    nb = n_batches(n_samples, NT)
    yblk = np.array([[np.median(probe.yc[probe.kcoords == s])] for s in ids])
    spikes = empty_spikes() if spikes is None else spikes
    counts = np.zeros((ids.size, nb), np.int64)
    for k in range(ids.size):
        counts[k] = np.bincount(spikes["batch"][spikes["shank"] == k], minlength=nb)[:nb]
    return DriftEstimate(
        False,
        reason,
        int(NT),
        int(n_samples),
        float(sample_rate),
        ids,
        np.zeros((ids.size, nb, 1)),
        yblk,
        spikes,
        counts,
    )


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
    spikes = stored_detections(
        getattr(reader, "group", None), threshold, "whitened" if unwhiten is None else "filtered"
    )
    if spikes is None:  # not made while preprocessing (another threshold, or an older store)
        spikes = detect_spikes(reader, threshold, be, unwhiten)
    else:
        logger.info("drift detection: the detections made while preprocessing")
    probe = reader.probe
    ids = probe.shank_ids()
    spikes["channel"] = spikes["channel"].astype(np.int32)
    spikes["shank"] = np.searchsorted(ids, probe.kcoords[spikes["channel"]]).astype(np.int32)
    nb = n_batches(reader.n_samples, reader.NT)
    logger.info(
        "drift detection: %d spikes in %d batches (median %.0f per batch)",
        spikes["time"].size,
        nb,
        np.median(np.bincount(spikes["batch"], minlength=nb)),
    )
    dshift, yblk, counts = [], [], []
    for k, s in enumerate(ids):
        on = spikes["shank"] == k
        result = register_shank(
            spikes["depth"][on],
            spikes["amplitude"][on],
            spikes["batch"][on],
            nb,
            probe.yc[probe.kcoords == s],
            threshold,
            nblocks,
            be,
        )
        if result is None:
            reason = (
                f"shank {s:g}: no batch has {MIN_SPIKES_PER_BATCH} spikes above "
                f"spkTh_drift={threshold:g}"
            )
            logger.warning("drift correction off: %s", reason)
            return identity_estimate(*geometry, reason, spikes)
        dshift.append(result[0])
        yblk.append(result[1])
        counts.append(result[2])
    est = DriftEstimate(
        True,
        "",
        reader.NT,
        reader.n_samples,
        reader.sample_rate,
        ids,
        np.stack(dshift),
        np.stack(yblk),
        spikes,
        np.stack(counts),
        "whitened" if unwhiten is None else "filtered",
    )
    log_estimate_summary(est)
    return est


def log_estimate_summary(est: DriftEstimate) -> None:
    """One log line per shank: range of the displacement."""
    for k, s in enumerate(est.shank_ids):
        d = est.dshift[k]
        logger.info(
            "shank %g: displacement %.1f to %.1f um (peak to peak %.1f um) over %d "
            "batches, %d blocks",
            s,
            d.min(),
            d.max(),
            np.ptp(d),
            d.shape[0],
            d.shape[1],
        )


def run_drift(preprocessed, whitening, out, p: dict) -> None:
    """The ``drift`` stage: ``preprocessed.zarr`` (+ ``whitening.zarr``) → ``drift.zarr``.

    Its picture is the ``drift_plot`` stage's (:func:`kilosnake.drift.plot.run_drift_plot`),
    drawn from the store beside the stages that follow.

    Parameters
    ----------
    preprocessed, whitening : str or Path
        The preprocessed store and the whitening store (its matrix lets spikes be localised on
        filtered waveforms; pass None to localise on whitened ones).
    out : str or Path
        The store to write.
    p : dict
        Resolved parameters of the drift stage, device and seed.
    """

    be = get_backend(p["device"])
    reader = PreprocessedReader(preprocessed)
    unwhiten = None
    if whitening is not None:
        wg = open_store(whitening)
        unwhiten = unwhitening_matrix(wg["whitening"][...], wg["covariance"][...])
    est = estimate_drift(reader, p, be, unwhiten)
    write_drift_store(out, est, p, be.name)
