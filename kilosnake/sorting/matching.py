"""Vectorised matching pursuit (the role of Kilosort's ``mexMPnu8``), shared by learning and the
final pass.

For a batch ``X`` (T × Nchan, whitened) and unit-norm templates ``T_i`` with amplitudes
``mu_i``:

1. projections ``C[t, i] = <X[t : t+nt0], T_i>`` of every window onto every template, computed
   as ``X @ U`` (spatial) followed by a correlation with ``W`` along time (FFT overlap-save);
2. the score with the amplitude prior ``Cf = (max(0, C) + λμ)² / (1+λ) − λμ²`` (the variance
   explained by the template at the best amplitude penalised for deviating from ``mu``), its
   maximum over templates ``best[t]`` and the arg-max template;
3. peeling: every ``t`` with ``best[t] > Th²`` that is the largest within ±(nt0−1) samples is a
   spike of amplitude ``C[t, id]`` (least squares). All such spikes are accepted at once — their
   windows do not overlap, so their amplitudes do not depend on each other — and subtracted from
   the data and, through the template cross-correlations ``ctc``, from ``C``; scores are
   recomputed only where ``C`` changed. Repeat until no window passes the threshold.

Times inside the sorting package are window onsets (index of the window's first sample in the
batch); the spike time is ``onset + nt0min``.
"""

from __future__ import annotations

import dataclasses
import logging

from kilosnake.runtime import gpu_memory
from kilosnake.runtime.backend import Backend
from kilosnake.sorting import kernels, svd
from kilosnake.sorting.arrays import fft_module

logger = logging.getLogger(__name__)

#: peeling stops after this many rounds (each round removes at least one spike)
MAX_ROUNDS = 200
#: FFT length of the overlap-save correlation with the temporal factors
SEGMENT = 4096


@dataclasses.dataclass
class TemplateSet:
    """Frozen templates prepared for matching (device arrays, float32).

    Each template is non-zero only on its ``channels`` (at most ``n_near``), so subtraction
    and projection work on those channels alone; ``blocks`` group templates with neighbouring
    peak channels so that the spatial projection of a block reads only the union of their
    channels.
    """

    W: object  # (Nfilt, nt0, rank)
    U: object  # (Nfilt, Nchan, rank)
    mu: object  # (Nfilt,)
    channels: object  # (Nfilt, n_near) int64, the channels where a template can be non-zero
    T_local: object  # (Nfilt, nt0, n_near) unit-norm templates on those channels
    ctc: object  # (Nfilt, 2*nt0-1, Nfilt), see svd.template_cross_correlations
    blocks: list  # [(template indices, channel indices, spectra (b*rank, SEGMENT/2+1))]
    block_size: int  # templates per block (gpu_memory.blocks.templates when built)

    @property
    def n_templates(self) -> int:
        return int(self.W.shape[0])

    @property
    def nt0(self) -> int:
        return int(self.W.shape[1])

    def dense(self, be: Backend):
        """Unit-norm templates on every channel, (Nfilt, nt0, Nchan)."""
        return svd.full_templates(be, self.W, self.U)


@dataclasses.dataclass
class PeelResult:
    """Spikes found in one batch and what is left of the batch."""

    onset: object  # (n,) int64 window onset in the batch
    template: object  # (n,) int64
    amplitude: object  # (n,) float32 least-squares amplitude of the unit-norm template
    score: object  # (n,) float32 sqrt of the explained variance with the amplitude prior
    residual: object  # (T, Nchan) float32 data minus every subtracted spike
    projections: object  # (T - nt0 + 1, Nfilt) float32 projections of the residual

    @property
    def n_spikes(self) -> int:
        return int(self.onset.shape[0])

    def select(self, keep) -> PeelResult:
        """The spikes where ``keep`` is true (residual and projections shared)."""
        return PeelResult(
            self.onset[keep],
            self.template[keep],
            self.amplitude[keep],
            self.score[keep],
            self.residual,
            self.projections,
        )


def make_template_set(be: Backend, W, U, mu, n_near: int = 32) -> TemplateSet:
    """Templates prepared for matching, from rank-3 factors.

    Parameters
    ----------
    be : Backend
    W : array (Nfilt, nt0, rank)
    U : array (Nfilt, Nchan, rank)
        Spatial factors; each template should be non-zero on at most ``n_near`` channels (as
        the factorisation gives); otherwise only its ``n_near`` strongest channels are used.
    mu : array (Nfilt,)
    n_near : int

    Returns
    -------
    TemplateSet
    """
    xp = be.xp
    W = xp.asarray(W, dtype=xp.float32)
    U = xp.asarray(U, dtype=xp.float32)
    mu = xp.asarray(mu, dtype=xp.float32)
    n_near = min(int(n_near), U.shape[1])
    energy = (U**2).sum(axis=2)
    channels = xp.argsort(-energy, axis=1, kind="stable")[:, :n_near].astype(xp.int64)
    U_local = xp.take_along_axis(U, channels[:, :, None], axis=1)  # (Nfilt, n_near, rank)
    T_local = W @ U_local.transpose(0, 2, 1)
    ctc = svd.template_cross_correlations(be, W, U)
    size = gpu_memory.blocks.templates
    blocks = projection_blocks(be, W, U, channels, size)
    return TemplateSet(W, U, mu, channels, T_local, ctc, blocks, size)


def projection_scratch_bytes(n_samples: int, rank: int = svd.RANK) -> int:
    """GPU scratch of one template in a projection block (float32 products, overlapping
    segments and their spectra) for a batch of ``n_samples``."""
    return 4 * 4 * rank * int(n_samples)


def current_blocks(be: Backend, tset: TemplateSet) -> list:
    """The template set's projection blocks, rebuilt if the block size was lowered since."""
    if tset.block_size != gpu_memory.blocks.templates:
        tset.block_size = gpu_memory.blocks.templates
        tset.blocks = projection_blocks(be, tset.W, tset.U, tset.channels, tset.block_size)
    return tset.blocks


def projection_blocks(be: Backend, W, U, channels, block_size: int = 32, segment: int = SEGMENT):
    """Templates grouped by peak channel, with their channel unions and filter spectra.

    Returns
    -------
    list of (template indices, channel indices, spectra)
        ``spectra`` (b*rank, segment/2+1) complex64 = conj(rfft(W)) of the block's templates.
    """
    xp = be.xp
    fft = fft_module(be)
    n_filt, nt0, rank = W.shape
    order = xp.argsort(channels[:, 0], kind="stable") if n_filt else xp.zeros(0, xp.int64)
    blocks = []
    for b0 in range(0, n_filt, block_size):
        idx = order[b0 : b0 + block_size]
        used = xp.zeros(U.shape[1], dtype=bool)
        used[channels[idx].ravel()] = True
        chans = xp.flatnonzero(used)  # the sorted union (a mask costs less than a sort)
        taps = W[idx].transpose(0, 2, 1).reshape(-1, nt0)  # (b*rank, nt0)
        spectra = xp.conj(fft.rfft(taps, n=segment, axis=1)).astype(xp.complex64)
        blocks.append((idx, chans, spectra))
    return blocks


def project(be: Backend, X, tset: TemplateSet):
    """Projections ``C[t, i] = <X[t : t+nt0], T_i>`` for every window onset ``t``.

    Per block of templates: the spatial factors applied to the block's channels, then a
    correlation with the temporal factors by overlap-save FFTs of ``SEGMENT`` samples, the
    rank components summed in the frequency domain.

    Returns
    -------
    array (T - nt0 + 1, Nfilt) float32
    """
    xp = be.xp
    fft = fft_module(be)
    n_filt, nt0, rank = tset.W.shape
    n_out = X.shape[0] - nt0 + 1
    C = xp.empty((n_out, n_filt), dtype=xp.float32)
    blocks = current_blocks(be, tset)
    segment = (blocks[0][2].shape[1] - 1) * 2 if blocks else SEGMENT
    step = segment - nt0 + 1
    n_seg = -(-n_out // step)
    rows = xp.arange(n_seg)[:, None] * step + xp.arange(segment)[None, :]
    Xt = xp.zeros((X.shape[1], n_seg * step + nt0 - 1), dtype=xp.float32)
    Xt[:, : X.shape[0]] = X.T  # channel-major, zero-padded to whole segments
    for idx, chans, spectra in blocks:
        Ub = tset.U[idx][:, chans, :].transpose(0, 2, 1).reshape(-1, chans.shape[0])
        P = Ub @ Xt[chans]  # (b*rank, T)
        S = fft.rfft(P[:, rows], axis=2)  # (b*rank, n_seg, nfreq)
        S *= spectra[:, None, :]  # in place: no second spectrum-sized array
        S = S.reshape(-1, rank, n_seg, S.shape[2]).sum(axis=1)
        corr = fft.irfft(S, n=segment, axis=2)[:, :, :step]  # (b, n_seg, step)
        C[:, idx] = corr.reshape(corr.shape[0], -1)[:, :n_out].T
    return C


def prior_score(be: Backend, C, mu, lam: float):
    """Variance explained with the amplitude prior: ``(max(0,C)+λμ)²/(1+λ) − λμ²``."""
    xp = be.xp
    lm = xp.float32(lam) * mu
    return (xp.maximum(C, 0) + lm) ** 2 / xp.float32(1.0 + lam) - lm * mu


def best_scores(be: Backend, C, mu, lam: float):
    """The largest prior score of each row of ``C`` and its template (the first one on ties);
    one CUDA kernel on the GPU."""
    if be.use_kernels:
        return kernels.best_prior_scores(C, mu, lam)
    cf = prior_score(be, C, mu, lam)
    return cf.max(axis=1), cf.argmax(axis=1)


def _update_best_scores(be: Backend, C, mu, lam: float, onsets, half: int, best, best_id) -> None:
    """Refresh ``best`` and ``best_id`` after spikes at ``onsets`` changed ``C`` within
    ±``half`` rows of them: those rows only on the CPU; every row on the GPU, where one pass
    over ``C`` costs less than gathering the changed rows (same values either way)."""
    if be.use_kernels:
        kernels.best_prior_scores(C, mu, lam, out=(best, best_id))
        return
    rows = _touched_rows(be, onsets, half, C.shape[0])
    cf = prior_score(be, C[rows], mu, lam)
    best[rows], best_id[rows] = cf.max(axis=1), cf.argmax(axis=1)


def local_maxima(be: Backend, best, threshold: float, half_width: int):
    """Onsets where ``best`` exceeds ``threshold`` and is the largest within ±``half_width``.

    Of several equal maxima closer than ``half_width + 1`` only the first is returned, so the
    returned onsets are at least ``half_width + 1`` apart. Two CUDA kernels on the GPU.
    """
    if be.use_kernels:
        return kernels.local_maxima(best, threshold, half_width)
    xp = be.xp
    running = be.ndimage.maximum_filter1d(
        best, size=2 * half_width + 1, mode="constant", cval=-xp.inf
    )
    onsets = xp.nonzero((best > threshold) & (best >= running))[0]
    if onsets.shape[0] > 1:
        gap_ok = xp.concatenate([xp.ones(1, dtype=bool), xp.diff(onsets) > half_width])
        onsets = onsets[gap_ok]
    return onsets.astype(xp.int64)


def peel(
    be: Backend, X, tset: TemplateSet, Th: float, lam: float, max_rounds: int = MAX_ROUNDS
) -> PeelResult:
    """Matching pursuit of the templates in one batch.

    Parameters
    ----------
    be : Backend
    X : array (T, Nchan) float32
        Whitened batch (with margins); not modified.
    tset : TemplateSet
    Th : float
        Score threshold (whitened SD): a spike needs ``Cf > Th²``.
    lam : float
        Weight of the amplitude prior.
    max_rounds : int
        Safety bound on the peeling rounds.

    Returns
    -------
    PeelResult
        Spikes in the order they were found (round by round, by onset within a round).
    """
    xp = be.xp
    X = xp.asarray(X, dtype=xp.float32)
    nt0 = tset.nt0
    half = nt0 - 1
    residual = X.copy()
    n_out = X.shape[0] - nt0 + 1
    empty = _empty_result(be, residual, n_out, tset.n_templates)
    if tset.n_templates == 0 or n_out <= 0:
        return empty
    # projections padded by nt0-1 rows on each side so that updates need no clipping
    Cpad = xp.zeros((n_out + 2 * half, tset.n_templates), dtype=xp.float32)
    Cpad[half : half + n_out] = project(be, X, tset)
    C = Cpad[half : half + n_out]
    best, best_id = best_scores(be, C, tset.mu, lam)
    found = []
    threshold = float(Th) ** 2
    for _ in range(max_rounds):
        onsets = local_maxima(be, best, threshold, half)
        if onsets.shape[0] == 0:
            break
        ids = best_id[onsets]
        amps = C[onsets, ids]
        found.append((onsets, ids, amps, xp.sqrt(best[onsets])))
        _subtract_from_data(be, residual, tset, onsets, ids, amps)
        _subtract_from_projections(be, Cpad, tset.ctc, onsets, ids, amps)
        _update_best_scores(be, C, tset.mu, lam, onsets, half, best, best_id)
    else:
        logger.warning("matching pursuit stopped after %d rounds", max_rounds)
    if not found:
        return empty
    onset, template, amplitude, score = (xp.concatenate(parts) for parts in zip(*found))
    return PeelResult(
        onset,
        template.astype(xp.int64),
        amplitude.astype(xp.float32),
        score.astype(xp.float32),
        residual,
        C,
    )


def _empty_result(be: Backend, residual, n_out: int, n_filt: int) -> PeelResult:
    xp = be.xp
    return PeelResult(
        xp.zeros(0, dtype=xp.int64),
        xp.zeros(0, dtype=xp.int64),
        xp.zeros(0, dtype=xp.float32),
        xp.zeros(0, dtype=xp.float32),
        residual,
        xp.zeros((max(n_out, 0), n_filt), dtype=xp.float32),
    )


def _subtract_from_data(be: Backend, residual, tset: TemplateSet, onsets, ids, amps) -> None:
    """``residual[t : t+nt0] -= a · T_id`` for spikes whose windows do not overlap (one CUDA
    kernel on the GPU, the same operations)."""
    if be.use_kernels:
        kernels.subtract_templates(residual, onsets, ids, amps, tset.channels, tset.T_local)
        return
    xp = be.xp
    nt0, chunk = tset.nt0, gpu_memory.blocks.spikes
    for s0 in range(0, onsets.shape[0], chunk):
        sl = slice(s0, s0 + chunk)
        rows = onsets[sl, None] + xp.arange(nt0)[None, :]
        chans = tset.channels[ids[sl]]
        residual[rows[:, :, None], chans[:, None, :]] -= (
            amps[sl, None, None] * tset.T_local[ids[sl]]
        )


def _subtract_from_projections(be: Backend, Cpad, ctc, onsets, ids, amps) -> None:
    """Update the padded projections for subtracted spikes (≥ nt0 apart).

    Each spike changes ``2·nt0 − 1`` rows; spikes alternate between two halves so that within a
    half the changed rows never overlap and plain fancy-index subtraction is exact (on the GPU a
    CUDA kernel per half).
    """
    if be.use_kernels:
        kernels.subtract_cross_correlations(Cpad, ctc, onsets, ids, amps)
        return
    xp = be.xp
    n_lags = ctc.shape[1]
    lag = xp.arange(n_lags)[None, :]
    chunk = gpu_memory.blocks.spikes
    for parity in (0, 1):
        o, j, a = onsets[parity::2], ids[parity::2], amps[parity::2]
        for s0 in range(0, o.shape[0], chunk):
            sl = slice(s0, s0 + chunk)
            rows = o[sl, None] + lag  # padded coordinates: onset - (nt0-1) + nt0-1
            Cpad[rows] -= a[sl, None, None] * ctc[j[sl]]


def _touched_rows(be: Backend, onsets, half: int, n_out: int):
    """Sorted unique projection rows within ±``half`` of the onsets (marked in a mask, which
    is cheaper than sorting the candidate rows)."""
    xp = be.xp
    rows = (onsets[:, None] + xp.arange(-half, half + 1)[None, :]).ravel()
    rows = rows[(rows >= 0) & (rows < n_out)]
    touched = xp.zeros(n_out, dtype=bool)
    touched[rows] = True
    return xp.flatnonzero(touched)


# --------------------------------------------------------------------------------------------
# what the spikes leave behind


def residual_windows(be: Backend, result: PeelResult, nt0: int, channels=None):
    """The residual around each spike, (n, nt0, Nchan) or (n, nt0, C) on per-spike ``channels``.

    Adding ``amplitude × template`` gives the spike's own waveform (what it contributes to
    averages and features).
    """
    xp = be.xp
    rows = result.onset[:, None] + xp.arange(nt0)[None, :]
    if channels is None:
        return result.residual[rows]
    return result.residual[rows[:, :, None], channels[:, None, :]]


def segment_sum(be: Backend, values, labels, n_labels: int):
    """Sum of ``values`` rows per label, in float64, deterministically.

    Rows are ordered by (label, position), summed cumulatively in that order, and each
    label's sum is the difference of the running sums at its ends: a fixed order of additions
    (the same result whatever the thread count) and a handful of array operations whatever the
    number of labels (no loop over labels, no scattered atomic adds).

    Parameters
    ----------
    be : Backend
    values : array (n, ...)
    labels : array (n,) int
        Label of each row, in ``[0, n_labels)``.
    n_labels : int

    Returns
    -------
    sums : array (n_labels, *values.shape[1:]) float64
    counts : array (n_labels,) int64
    """
    xp = be.xp
    labels = xp.asarray(labels, dtype=xp.int64)
    counts = xp.bincount(labels, minlength=n_labels)[:n_labels].astype(xp.int64)
    if values.shape[0] == 0:
        return xp.zeros((n_labels, *values.shape[1:])), counts
    ordered = values[xp.argsort(labels, kind="stable")].astype(xp.float64)
    running = xp.concatenate([xp.zeros((1, *values.shape[1:])), xp.cumsum(ordered, axis=0)])
    ends = xp.cumsum(counts)
    return running[ends] - running[ends - counts], counts
