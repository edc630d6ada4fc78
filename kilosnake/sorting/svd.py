"""Batched rank-3 factorisation of templates, peak alignment and template cross-correlations.

A template ``i`` is stored as ``mu[i] * Σ_k outer(W[i, :, k], U[i, :, k])`` with ``W[i]``
(nt0 × rank) orthonormal columns and ``Σ_k ||U[i, :, k]||² = 1``, so the rank-3 product has unit
norm and ``mu[i]`` is the template's amplitude. Inside the sorting package templates are
template-major: ``W`` (Nfilt, nt0, rank), ``U`` (Nfilt, Nchan, rank), ``dWU`` (Nfilt, nt0, Nchan).
The stores use Kilosort's layouts (``W`` (nt0, Nfilt, 3), ``U`` (Nchan, Nfilt, 3)).
"""

from __future__ import annotations

import dataclasses
import logging

from kilosnake.runtime import gpu_memory
from kilosnake.runtime.backend import Backend
from kilosnake.runtime.parallel import one_blas_thread
from kilosnake.sorting.arrays import fft_module

logger = logging.getLogger(__name__)

#: rank of every template (Kilosort's Nrank)
RANK = 3


@dataclasses.dataclass
class LowRankTemplates:
    """Rank-3 factors of a set of templates (device arrays, template-major)."""

    W: object  # (Nfilt, nt0, rank) float64, orthonormal columns, W[:, nt0min, 0] < 0
    U: object  # (Nfilt, Nchan, rank) float64, zero outside the template's neighbourhood
    mu: object  # (Nfilt,) float64 amplitude (Frobenius norm)
    iW: object  # (Nfilt,) int64 peak channel

    @property
    def n_templates(self) -> int:
        return int(self.W.shape[0])


def peak_channels(be: Backend, dWU, nt0min: int):
    """Channel of the largest absolute value at sample ``nt0min`` of every template."""
    return be.xp.argmax(be.xp.abs(dWU[:, nt0min, :]), axis=1).astype(be.xp.int64)


def factorise_templates(
    be: Backend, dWU, iC, Ka, Kb, nt0min: int, rank: int = RANK
) -> LowRankTemplates:
    """Rank-``rank`` factors of every template, restricted to its peak channel's neighbourhood.

    For each template the channels outside ``iC[:, iW]`` are ignored, the (nt0 × n_near)
    block is factorised by a batched SVD, the temporal factors are shifted circularly and
    resampled at the best sub-sample phase so that the first one peaks at ``nt0min``, then
    re-orthonormalised (the spatial factors absorb the change, so the rank-3 product is that of
    the aligned waveform) and signed (first factor negative at ``nt0min``, the others with
    their largest sample positive).

    Parameters
    ----------
    be : Backend
    dWU : array (Nfilt, nt0, Nchan)
        Full waveforms.
    iC : array (n_near, Nchan) int
        Neighbourhoods.
    Ka, Kb : arrays
        Kriging kernels (see :func:`kilosnake.sorting.waveforms.kriging_kernels`).
    nt0min : int
    rank : int

    Returns
    -------
    LowRankTemplates
    """
    xp = be.xp
    dWU = xp.asarray(dWU, dtype=xp.float64)
    n_filt, nt0, n_chan = dWU.shape
    iC = xp.asarray(iC)
    iW = peak_channels(be, dWU, nt0min)
    neighbours = iC[:, iW].T  # (Nfilt, n_near)
    if n_filt == 0:
        empty = xp.zeros((0, nt0, rank))
        return LowRankTemplates(empty, xp.zeros((0, n_chan, rank)), xp.zeros(0), iW)
    block = xp.take_along_axis(dWU, neighbours[:, None, :], axis=2)  # (Nfilt, nt0, n_near)
    W, Uloc = leading_singular_factors(be, block, rank)
    W = align_peaks(be, W, xp.asarray(Ka), xp.asarray(Kb), nt0min)
    W, Uloc = orthonormalise(be, W, Uloc)
    W, Uloc = sign_factors(be, W, Uloc, nt0min)
    mu = xp.sqrt((Uloc**2).sum(axis=(1, 2)))
    Uloc = Uloc / xp.maximum(mu, 1e-12)[:, None, None]
    U = xp.zeros((n_filt, n_chan, rank))
    rows = xp.arange(n_filt)[:, None]
    U[rows, neighbours, :] = Uloc
    return LowRankTemplates(W, U, mu, iW)


def leading_singular_factors(be: Backend, block, rank: int):
    """The ``rank`` leading singular triplets of every matrix of a batch, as ``(u, s·v)``.

    Computed from the eigen-decomposition of the small Gram matrices ``blockᵀ·block``
    (n_near × n_near, batched ``eigh``) rather than a batched SVD: the same factors up to
    rounding (and signs, fixed later by :func:`sign_factors`), at a small fraction of the cost
    on the GPU. Directions whose singular value is negligible (templates of lower rank) are
    returned as zeros.

    Parameters
    ----------
    be : Backend
    block : array (n, rows, cols) float64
    rank : int

    Returns
    -------
    W : array (n, rows, rank)
        Left singular vectors (orthonormal columns where the singular value is not negligible).
    Uloc : array (n, cols, rank)
        Right singular vectors scaled by the singular values, so ``W @ Ulocᵀ`` is the best
        rank-``rank`` approximation of each matrix.
    """
    xp = be.xp
    n, rows, cols = block.shape
    gram = block.transpose(0, 2, 1) @ block  # (n, cols, cols)
    with one_blas_thread(be):  # small matrices: see one_blas_thread
        evals, evecs = xp.linalg.eigh(gram)  # ascending
    r = min(rank, cols)
    top = slice(cols - 1, cols - 1 - r, -1) if cols - 1 - r >= 0 else slice(cols - 1, None, -1)
    v = evecs[:, :, top]  # (n, cols, r), largest first
    s = xp.sqrt(xp.maximum(evals[:, top], 0.0))  # (n, r)
    largest = s[:, :1]
    usable = s > 1e-7 * xp.maximum(largest, 1e-300)
    u = (block @ v) / xp.where(usable, s, 1.0)[:, None, :]
    W = xp.zeros((n, rows, rank))
    Uloc = xp.zeros((n, cols, rank))
    W[:, :, :r] = xp.where(usable[:, None, :], u, 0.0)
    Uloc[:, :, :r] = xp.where(usable[:, None, :], v * s[:, None, :], 0.0)
    return W, Uloc


def align_peaks(be: Backend, W, Ka, Kb, nt0min: int):
    """Shift and resample temporal factors so the first one's peak sits at ``nt0min``.

    The largest ``|W[:, :, 0]|`` sample is moved to ``nt0min`` by a circular shift, then every
    factor is resampled with the kriging kernel of the sub-sample phase at which the
    interpolated first factor is largest in magnitude.
    """
    xp = be.xp
    n_filt, nt0, _ = W.shape
    imax = xp.argmax(xp.abs(W[:, :, 0]), axis=1)
    shift = nt0min - imax
    idx = (xp.arange(nt0)[None, :] - shift[:, None]) % nt0
    W = xp.take_along_axis(W, idx[:, :, None], axis=1)
    phase = xp.argmax(xp.abs(Ka @ W[:, :, 0].T), axis=0)  # (Nfilt,)
    kernels = Kb.transpose(2, 0, 1)[phase]  # (Nfilt, nt0, nt0)
    return kernels @ W


def orthonormalise(be: Backend, W, Uloc):
    """Gram-Schmidt on the temporal factors; the spatial factors absorb ``R`` (W Uᵀ kept)."""
    xp = be.xp
    rank = W.shape[2]
    Q = xp.zeros_like(W)
    R = xp.zeros((W.shape[0], rank, rank))
    for j in range(rank):
        v = W[:, :, j]
        for i in range(j):
            R[:, i, j] = (Q[:, :, i] * W[:, :, j]).sum(axis=1)
            v = v - R[:, i, j][:, None] * Q[:, :, i]
        norm = xp.sqrt((v**2).sum(axis=1))
        R[:, j, j] = norm
        Q[:, :, j] = v / xp.maximum(norm, 1e-12)[:, None]
    # W Uᵀ = Q R Uᵀ = Q (U Rᵀ)ᵀ
    return Q, Uloc @ R.transpose(0, 2, 1)


def sign_factors(be: Backend, W, U, nt0min: int):
    """Sign each factor pair: first temporal factor negative at ``nt0min``, others peak > 0."""
    xp = be.xp
    peak = xp.take_along_axis(W, xp.argmax(xp.abs(W), axis=1)[:, None, :], axis=1)[:, 0, :]
    signs = xp.where(peak < 0, -1.0, 1.0)  # (Nfilt, rank)
    signs[:, 0] = xp.where(W[:, nt0min, 0] > 0, -1.0, 1.0)
    return W * signs[:, None, :], U * signs[:, None, :]


def full_templates(be: Backend, W, U, mu=None):
    """Dense templates (Nfilt, nt0, Nchan): ``Σ_k W[:, :, k] ⊗ U[:, :, k]`` (× ``mu``)."""
    T = W @ U.transpose(0, 2, 1)
    if mu is not None:
        T = T * mu[:, None, None]
    return T


def template_cross_correlations(be: Backend, W, U, dtype=None):
    """Cross-correlations of all pairs of unit-norm templates at every lag.

    ``ctc[j, τ + nt0 - 1, i] = Σ_{s,c} T_i[s, c] · T_j[s + τ, c]`` for
    ``τ = -(nt0-1) … nt0-1``: the change of template ``i``'s projection at time ``t0 + τ`` per
    unit amplitude of template ``j`` subtracted at ``t0``. Computed from the rank-3 factors in
    the Fourier domain, in blocks of templates to bound memory.

    Parameters
    ----------
    be : Backend
    W : array (Nfilt, nt0, rank)
    U : array (Nfilt, Nchan, rank)
    dtype : dtype, optional
        Output type (default float32).

    Returns
    -------
    array (Nfilt, 2*nt0 - 1, Nfilt)
    """
    xp = be.xp
    dtype = dtype or xp.float32
    n_filt, nt0, rank = W.shape
    n_chan = U.shape[1]
    n_lags = 2 * nt0 - 1
    nfft = 1 << (n_lags - 1).bit_length()
    fft = fft_module(be)
    spectra = fft.rfft(W, n=nfft, axis=1)  # (Nfilt, nf, rank)
    nf = spectra.shape[1]
    lags = xp.arange(-(nt0 - 1), nt0) % nfft
    out = xp.empty((n_filt, n_lags, n_filt), dtype=dtype)
    block = max(1, gpu_memory.blocks.ctc_bytes // max(1, n_filt * nf * 16))
    for j0 in range(0, n_filt, block):
        j1 = min(n_filt, j0 + block)
        # spatial overlaps of templates j (rows) with all templates i, per rank pair
        # (k of i, l of j)
        gram = (
            U[j0:j1].transpose(0, 2, 1).reshape(-1, n_chan)
            @ U.transpose(0, 2, 1).reshape(-1, n_chan).T
        )  # ((b, l), (Nfilt, k))
        utu = gram.reshape(j1 - j0, rank, n_filt, rank).transpose(0, 2, 3, 1)
        acc = xp.zeros((j1 - j0, n_filt, nf), dtype=spectra.dtype)
        for k in range(rank):
            for l in range(rank):
                cross = xp.conj(spectra[None, :, :, k]) * spectra[j0:j1, None, :, l]
                acc += utu[:, :, k, l][:, :, None] * cross
        corr = fft.irfft(acc, n=nfft, axis=2)[:, :, lags]  # (b, Nfilt_i, n_lags)
        out[j0:j1] = corr.transpose(0, 2, 1).astype(dtype)
    return out


def zero_lag_correlation(ctc):
    """``cc[i, j]`` = correlation of unit-norm templates i and j at zero lag."""
    nt0 = (ctc.shape[1] + 1) // 2
    return ctc[:, nt0 - 1, :].T


def similarity_scores(ctc):
    """``simScore[i, j]`` = max over lags of the correlation of templates i and j."""
    return ctc.max(axis=1).T
