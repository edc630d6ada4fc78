"""Universal waveforms, channel neighbourhoods and sub-sample alignment kernels.

Everything here is computed once per recording by the detect stage:

* isolated threshold crossings of the whitened data and their single-channel snippets;
* ``wTEMP`` (nt0, 6): prototypes of the snippets found by scaled k-means, used to seed new
  templates;
* ``wPCA`` (nt0, 6): principal components of the snippets, the temporal basis of new templates
  and of the PC features;
* ``iC`` (n_near, Nchan): the nearest channels of every channel (itself first), the Gaussian
  channel ``mask`` and the channel distances;
* ``Ka`` (nup, nt0) and ``Kb`` (nt0, nt0, nup): kriging kernels that resample a waveform at
  ``nup`` sub-sample phases, used to align template peaks to ``nt0min``.

Convention: a waveform window holds ``nt0`` samples and its negative peak sits at the 0-based
index ``nt0min``; the time of a spike is the sample of that peak.
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.runtime.backend import Backend

logger = logging.getLogger(__name__)

#: tolerance of the "equals the running minimum" test (whitened units)
PEAK_TOLERANCE = 1e-3
#: number of universal waveform prototypes / PCA components computed (Kilosort's NrankPC)
N_UNIVERSAL = 6


# --------------------------------------------------------------------------------------------
# isolated peaks and snippets


def isolated_peaks(be: Backend, X, spkTh: float, loc_range, long_range, edge: int):
    """Negative threshold crossings that are local minima and have no other peak nearby.

    Parameters
    ----------
    be : Backend
    X : array (T, Nchan) float32
        Whitened data of one batch.
    spkTh : float
        Threshold (negative, whitened SD).
    loc_range : (int, int)
        Half-widths (samples, channel indices) of the running minimum a peak must equal.
    long_range : (int, int)
        Half-widths (samples, channel indices) inside which a peak must be the only one.
    edge : int
        Peaks closer than this to either end of the batch are dropped.

    Returns
    -------
    times, channels : arrays of int64 (device)
        Sample and channel of each isolated peak, sorted by time then channel.
    """
    xp = be.xp
    size_loc = (2 * int(loc_range[0]) + 1, 2 * int(loc_range[1]) + 1)
    running_min = be.ndimage.minimum_filter(X, size=size_loc, mode="nearest")
    peaks = (X < running_min + PEAK_TOLERANCE) & (X < spkTh)
    size_long = (2 * int(long_range[0]) + 1, 2 * int(long_range[1]) + 1)
    density = be.ndimage.uniform_filter(peaks.astype(xp.float32), size=size_long, mode="constant")
    n_near = density * float(size_long[0] * size_long[1])
    isolated = peaks & (n_near < 1.2)
    isolated[:edge] = False
    if edge > 0:
        isolated[-edge:] = False
    times, channels = xp.nonzero(isolated)
    return times.astype(xp.int64), channels.astype(xp.int64)


def extract_snippets(be: Backend, X, times, channels, nt0: int, nt0min: int):
    """Single-channel windows of ``nt0`` samples with sample ``times`` at index ``nt0min``.

    Returns
    -------
    array (n, nt0) float32
    """
    xp = be.xp
    rows = times[:, None] - nt0min + xp.arange(nt0)[None, :]
    return X[rows, channels[:, None]]


# --------------------------------------------------------------------------------------------
# universal waveforms


def scaled_kmeans_prototypes(
    be: Backend,
    snippets,
    n_prototypes: int = N_UNIVERSAL,
    n_iter: int = 10,
    nt0min: int | None = None,
):
    """Prototype waveforms of the snippets by scaled k-means (Kilosort's ``wTEMP``).

    Starting from evenly spaced snippets, each iteration assigns every snippet to the prototype
    with the largest dot product and recomputes each prototype as the dot-weighted sum of its
    members, normalised to unit norm.

    Parameters
    ----------
    be : Backend
    snippets : array (n, nt0)
    n_prototypes : int
    n_iter : int
    nt0min : int, optional
        When given, each prototype's sign is chosen to make it negative at this index.

    Returns
    -------
    array (nt0, n_prototypes) float32, unit-norm columns
    """
    xp = be.xp
    S = xp.asarray(snippets, dtype=xp.float64)
    n = S.shape[0]
    start = np.linspace(0, n - 1, n_prototypes).round().astype(np.int64)
    protos = S[xp.asarray(start)]
    protos = protos / xp.maximum(xp.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
    for _ in range(n_iter):
        dots = S @ protos.T  # (n, k)
        best = xp.argmax(dots, axis=1)
        weight = xp.where(best[:, None] == xp.arange(n_prototypes)[None, :], dots, 0.0)
        new = weight.T @ S  # (k, nt0)
        norms = xp.linalg.norm(new, axis=1, keepdims=True)
        protos = xp.where(norms > 1e-12, new / xp.maximum(norms, 1e-12), protos)
    protos = protos.T
    if nt0min is not None:
        protos = protos * _negative_at(xp, protos, nt0min)
    return protos.astype(xp.float32)


def pca_basis(be: Backend, snippets, n_components: int, nt0min: int):
    """Leading temporal principal components of the snippets (Kilosort's ``wPCA``).

    The first component is signed to be negative at ``nt0min``; each other one is signed to
    make its largest-magnitude sample positive, so the basis does not depend on the solver.

    Returns
    -------
    array (nt0, n_components) float32, orthonormal columns
    """
    xp = be.xp
    S = xp.asarray(snippets, dtype=xp.float64)
    gram = S.T @ S
    evals, evecs = xp.linalg.eigh(gram)
    basis = evecs[:, ::-1][:, :n_components]
    signs = _largest_positive(xp, basis)
    signs[0] = _negative_at(xp, basis[:, :1], nt0min)[0]
    return (basis * signs[None, :]).astype(xp.float32)


def _negative_at(xp, columns, index: int):
    """Per-column sign (+1/-1) that makes ``columns[index]`` negative (or zero)."""
    return xp.where(columns[index] > 0, -1.0, 1.0)


def _largest_positive(xp, columns):
    """Per-column sign that makes each column's largest-magnitude entry positive."""
    peak = xp.take_along_axis(columns, xp.argmax(xp.abs(columns), axis=0)[None, :], axis=0)[0]
    return xp.where(peak < 0, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# neighbourhoods


def closest_channels(xc, yc, n_near: int, sigma_mask: float):
    """Nearest channels of every channel, the Gaussian channel mask and channel distances.

    Parameters
    ----------
    xc, yc : arrays (Nchan,)
        Contact positions (µm).
    n_near : int
        Channels per neighbourhood (clipped to Nchan).
    sigma_mask : float
        Length scale (µm) of the mask ``exp(-d² / 2σ²)``.

    Returns
    -------
    iC : ndarray (n_near, Nchan) int64
        ``iC[:, c]`` = the channels nearest to ``c``, ``c`` itself first.
    mask : ndarray (n_near, Nchan) float32
        Gaussian weights of those channels, each column normalised by ``sqrt(1e-3 + Σ w²)``.
    C2C : ndarray (Nchan, Nchan) float64
        Distances between channels (µm).
    """
    xc = np.asarray(xc, dtype=np.float64)
    yc = np.asarray(yc, dtype=np.float64)
    C2C = np.hypot(xc[:, None] - xc[None, :], yc[:, None] - yc[None, :])
    n_near = min(int(n_near), xc.size)
    # stable sort; the channel itself (distance 0) comes first unless positions coincide
    order = np.argsort(C2C + np.eye(xc.size) * -1e-9, axis=0, kind="stable")
    iC = order[:n_near].astype(np.int64)
    d = np.take_along_axis(C2C, iC, axis=0)
    mask = np.exp(-(d**2) / (2 * sigma_mask**2))
    mask = mask / np.sqrt(1e-3 + (mask**2).sum(axis=0, keepdims=True))
    return iC, mask.astype(np.float32), C2C


# --------------------------------------------------------------------------------------------
# sub-sample alignment


def kriging_kernels(nt0: int, nt0min: int, nup: int, sig: float, ridge: float = 0.01):
    """Kriging kernels resampling an ``nt0``-sample waveform at ``nup`` sub-sample phases.

    A squared-exponential kernel ``exp(-d²/sig²)`` on a circular time axis interpolates the
    waveform; phase ``p`` of output sample ``s`` lies at position ``s - 0.5 + p/nup``.

    Returns
    -------
    Ka : ndarray (nup, nt0) float64
        ``Ka @ w`` = the ``nup`` interpolated values of ``w`` around sample ``nt0min``.
    Kb : ndarray (nt0, nt0, nup) float64
        ``Kb[:, :, p] @ w`` = ``w`` resampled at phase ``p`` (output sample, input sample).
    """
    x = np.arange(nt0, dtype=np.float64)
    y = (np.arange(nt0)[:, None] - 0.5 + np.arange(nup)[None, :] / nup).ravel()  # (nt0*nup,)
    kxx = _circular_gaussian(x[:, None], x[None, :], nt0, sig)
    kyx = _circular_gaussian(y[:, None], x[None, :], nt0, sig)
    B = np.linalg.solve(kxx + ridge * np.eye(nt0), kyx.T).T  # (nt0*nup, nt0)
    B = B.reshape(nt0, nup, nt0)  # (output sample, phase, input sample)
    Ka = B[nt0min]  # (nup, nt0)
    Kb = B.transpose(0, 2, 1)  # (output, input, phase)
    return np.ascontiguousarray(Ka), np.ascontiguousarray(Kb)


def _circular_gaussian(a, b, period: int, sig: float):
    d = np.abs(a - b) % period
    d = np.minimum(d, period - d)
    return np.exp(-(d**2) / sig**2)
