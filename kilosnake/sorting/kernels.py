"""CUDA kernels for the GPU path, where one kernel replaces a chain of array operations that
would each launch a kernel and write a full-size temporary.

Each kernel computes exactly what the array code beside it computes (same operations in the
same order, in float32), so the two backends agree bit for bit; the array code stays the
reference and the CPU path.

The callers (:mod:`kilosnake.sorting.matching`, ``detect``, ``learn``) choose a kernel when
:attr:`kilosnake.runtime.backend.Backend.use_kernels` is true (a GPU backend) and the array code
otherwise; ``be.array_code()`` switches the kernels off on the same backend, which is how the
tests compare the two.
"""

from __future__ import annotations

from kilosnake.runtime.kernels import compiled_kernel as _kernel

_SUMMED_SCORES = r"""
extern "C" __global__
void best_summed_scores(const float* F, const int* iC, const float* weight, const int n_proto,
                        const int n_chan, const int n_sum, const long long L, float* score,
                        long long* channel)
{
    // F: (n_proto, n_chan, L); iC: (n_sum, n_chan); weight[j] = 1/(j+1).
    // A block is 32 onsets (threadIdx.x, consecutive in memory) x GROUPS channel groups
    // (threadIdx.y takes channels y, y + GROUPS, ...); the groups' bests are then combined,
    // the larger score winning and, on equal scores, the lower channel (the first maximum).
    __shared__ float group_best[GROUPS][32];
    __shared__ long long group_channel[GROUPS][32];
    const long long t = (long long)blockIdx.x * 32 + threadIdx.x;
    const int y = threadIdx.y;
    float best_all = 0.0f;
    long long best_c = y;
    if (t < L) {
        const long long plane = (long long)n_chan * L;
        float running[MAX_PROTO];
        for (int c = y; c < n_chan; c += GROUPS) {
            for (int r = 0; r < n_proto; ++r) running[r] = 0.0f;
            float best = 0.0f;
            for (int j = 0; j < n_sum; ++j) {
                const long long row = (long long)iC[j * n_chan + c] * L + t;
                float top = __int_as_float(0xff800000);
                for (int r = 0; r < n_proto; ++r) {
                    running[r] = __fadd_rn(running[r], F[r * plane + row]);
                    top = fmaxf(top, running[r]);
                }
                top = fmaxf(top, 0.0f);
                top = __fmul_rn(top, top);
                top = __fmul_rn(top, weight[j]);
                best = fmaxf(best, top);
            }
            if (best > best_all) { best_all = best; best_c = c; }
        }
    }
    group_best[y][threadIdx.x] = best_all;
    group_channel[y][threadIdx.x] = best_c;
    __syncthreads();
    if (y != 0 || t >= L) return;
    for (int g = 1; g < GROUPS; ++g) {
        const float v = group_best[g][threadIdx.x];
        const long long c = group_channel[g][threadIdx.x];
        if (v > best_all || (v == best_all && c < best_c)) { best_all = v; best_c = c; }
    }
    score[t] = best_all;
    channel[t] = best_c;
}
"""

#: most prototypes the summed-score kernel handles (registers per thread)
MAX_PROTO = 16
#: channel groups per block of the summed-score kernel (threads per block = 32 x this)
SUMMED_SCORE_GROUPS = 8


def summed_score_weights(n_sum: int):
    """``1 / (j + 1)`` as float32 for ``j < n_sum``: the weights of the partial sums."""
    import numpy as np

    return np.array([np.float32(1.0 / (j + 1)) for j in range(n_sum)], dtype=np.float32)


def best_summed_scores(F, iC_sum):
    """Best score over channels and prototypes at each onset, and its channel (CuPy).

    Parameters
    ----------
    F : cupy array (n_proto, Nchan, L) float32
        Filter-bank outputs of every channel.
    iC_sum : cupy array (n_sum, Nchan) int
        Each channel's nearest channels (itself first).

    Returns
    -------
    score : (L,) float32
        ``max_{c, j, r} max(S_j, 0)² / (j+1)`` with ``S_j`` the sum of ``F[r]`` over the ``j+1``
        nearest channels of ``c``.
    channel : (L,) int64
        The first channel ``c`` reaching the score (0 where no score is positive).
    """
    import cupy

    n_proto, n_chan, L = (int(n) for n in F.shape)
    if n_proto > MAX_PROTO:
        raise ValueError(f"{n_proto} prototypes; the kernel handles at most {MAX_PROTO}")
    F = cupy.ascontiguousarray(F, dtype=cupy.float32)
    iC = cupy.ascontiguousarray(iC_sum, dtype=cupy.int32)
    weight = cupy.asarray(summed_score_weights(iC.shape[0]))
    score = cupy.empty(L, dtype=cupy.float32)
    channel = cupy.empty(L, dtype=cupy.int64)
    source = _SUMMED_SCORES.replace("MAX_PROTO", str(MAX_PROTO)).replace(
        "GROUPS", str(SUMMED_SCORE_GROUPS)
    )
    kernel = _kernel("best_summed_scores", source)
    kernel(
        ((L + 31) // 32,),
        (32, SUMMED_SCORE_GROUPS),
        (
            F,
            iC,
            weight,
            cupy.int32(n_proto),
            cupy.int32(n_chan),
            cupy.int32(iC.shape[0]),
            cupy.int64(L),
            score,
            channel,
        ),
    )
    return score, channel


_PRIOR_SCORES = r"""
extern "C" __global__
void best_prior_scores(const float* C, const float* mu, const float lam, const float one_lam,
                       const long long n_rows, const int n_filt, float* best, long long* best_id)
{
    // a warp per row of C (n_rows, n_filt): the largest (max(0,C)+lam*mu)^2/(1+lam) - lam*mu^2
    // and the first template reaching it
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;
    const float* c = C + row * n_filt;
    float v = __int_as_float(0xff800000);
    int id = 0x7fffffff;
    for (int i = lane; i < n_filt; i += 32) {
        const float lm = __fmul_rn(lam, mu[i]);
        const float a = __fadd_rn(fmaxf(c[i], 0.0f), lm);
        const float s = __fsub_rn(__fdiv_rn(__fmul_rn(a, a), one_lam), __fmul_rn(lm, mu[i]));
        if (s > v) { v = s; id = i; }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
        const float v2 = __shfl_down_sync(0xffffffff, v, offset);
        const int id2 = __shfl_down_sync(0xffffffff, id, offset);
        if (v2 > v || (v2 == v && id2 < id)) { v = v2; id = id2; }
    }
    if (lane == 0) { best[row] = v; best_id[row] = id; }
}
"""


def best_prior_scores(C, mu, lam: float, out=None):
    """Largest prior score of each row of projections and its template (CuPy).

    Parameters
    ----------
    C : cupy array (n_rows, Nfilt) float32, C-ordered
    mu : cupy array (Nfilt,) float32
    lam : float

    Returns
    -------
    best : (n_rows,) float32
        ``max_i (max(0, C[t,i]) + λμ_i)² / (1+λ) − λμ_i²`` (float32, the operations of
        :func:`kilosnake.sorting.matching.prior_score`).
    best_id : (n_rows,) int64
        The first ``i`` reaching it.

    ``out=(best, best_id)`` writes into existing arrays.
    """
    import cupy
    import numpy as np

    n_rows, n_filt = (int(n) for n in C.shape)
    if not C.flags.c_contiguous:
        raise ValueError("projections must be C-ordered")
    mu = cupy.ascontiguousarray(mu, dtype=cupy.float32)
    if out is None:
        out = cupy.empty(n_rows, dtype=cupy.float32), cupy.empty(n_rows, dtype=cupy.int64)
    best, best_id = out
    threads = 256
    blocks = (n_rows * 32 + threads - 1) // threads
    _kernel("best_prior_scores", _PRIOR_SCORES)(
        (blocks,),
        (threads,),
        (
            C,
            mu,
            np.float32(lam),
            np.float32(1.0 + lam),
            np.int64(n_rows),
            np.int32(n_filt),
            best,
            best_id,
        ),
    )
    return best, best_id


_PEAKS = r"""
extern "C" __global__
void peak_candidates(const float* best, const long long n, const int half, const float threshold,
                     bool* candidate)
{
    // above threshold and no larger value within +-half (outside the array counts as -inf)
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const float v = best[t];
    bool ok = v > threshold;
    const long long lo = t - half > 0 ? t - half : 0;
    const long long hi = t + half < n - 1 ? t + half : n - 1;
    for (long long u = lo; ok && u <= hi; ++u) ok = !(best[u] > v);
    candidate[t] = ok;
}

extern "C" __global__
void first_of_close_candidates(const bool* candidate, const long long n, const int half,
                               bool* keep)
{
    // a candidate with no other candidate in the half samples before it
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    bool ok = candidate[t];
    const long long lo = t - half > 0 ? t - half : 0;
    for (long long u = lo; ok && u < t; ++u) ok = !candidate[u];
    keep[t] = ok;
}
"""

_SUBTRACT = r"""
extern "C" __global__
void subtract_templates(float* residual, const long long n_chan, const long long* onsets,
                        const long long* ids, const float* amps, const long long* channels,
                        const float* T_local, const int nt0, const int n_near)
{
    // a block per spike: residual[onset + s, channels[id, q]] -= amp * T_local[id, s, q]
    const long long k = blockIdx.x;
    const long long id = ids[k];
    const float a = amps[k];
    for (int e = threadIdx.x; e < nt0 * n_near; e += blockDim.x) {
        const int s = e / n_near, q = e % n_near;
        const long long r = (onsets[k] + s) * n_chan + channels[id * n_near + q];
        residual[r] = __fsub_rn(residual[r], __fmul_rn(a, T_local[(id * nt0 + s) * n_near + q]));
    }
}

extern "C" __global__
void subtract_cross_correlations(float* Cpad, const long long n_filt, const long long* onsets,
                                 const long long* ids, const float* amps, const float* ctc,
                                 const int n_lags, const long long n_spikes, const int parity)
{
    // a block per spike of one parity: Cpad[onset + lag, f] -= amp * ctc[id, lag, f]
    const long long k = 2 * (long long)blockIdx.x + parity;
    if (k >= n_spikes) return;
    const long long id = ids[k];
    const float a = amps[k];
    const long long span = (long long)n_lags * n_filt;
    float* c = Cpad + onsets[k] * n_filt;
    const float* x = ctc + id * span;
    for (long long e = threadIdx.x; e < span; e += blockDim.x)
        c[e] = __fsub_rn(c[e], __fmul_rn(a, x[e]));
}
"""


def local_maxima(best, threshold: float, half: int):
    """:func:`kilosnake.sorting.matching.local_maxima` in two CUDA kernels (CuPy)."""
    import cupy
    import numpy as np

    n = int(best.shape[0])
    candidate = cupy.empty(n, dtype=cupy.bool_)
    keep = cupy.empty(n, dtype=cupy.bool_)
    threads = 256
    grid = ((n + threads - 1) // threads,)
    _kernel("peak_candidates", _PEAKS)(
        grid, (threads,), (best, np.int64(n), np.int32(half), np.float32(threshold), candidate)
    )
    _kernel("first_of_close_candidates", _PEAKS)(
        grid, (threads,), (candidate, np.int64(n), np.int32(half), keep)
    )
    return cupy.flatnonzero(keep).astype(cupy.int64)


def subtract_templates(residual, onsets, ids, amps, channels, T_local) -> None:
    """``residual[o : o+nt0, channels[id]] -= a · T_local[id]`` for spikes whose windows do not
    overlap (CuPy, in place)."""
    import numpy as np

    n = int(onsets.shape[0])
    if n == 0:
        return
    nt0, n_near = int(T_local.shape[1]), int(T_local.shape[2])
    _kernel("subtract_templates", _SUBTRACT)(
        (n,),
        (128,),
        (
            residual,
            np.int64(residual.shape[1]),
            onsets,
            ids,
            amps.astype(np.float32, copy=False),
            channels,
            T_local,
            np.int32(nt0),
            np.int32(n_near),
        ),
    )


def subtract_cross_correlations(Cpad, ctc, onsets, ids, amps) -> None:
    """``Cpad[o : o + 2·nt0−1] -= a · ctc[id]`` for spikes at least ``nt0`` apart (CuPy, in
    place): even-numbered spikes, then odd-numbered ones, so no two updates of a launch meet."""
    import numpy as np

    n = int(onsets.shape[0])
    if n == 0:
        return
    n_lags = int(ctc.shape[1])
    ctc = ctc if ctc.flags.c_contiguous else ctc.copy()
    for parity in (0, 1):
        blocks = (n - parity + 1) // 2
        if blocks:
            _kernel("subtract_cross_correlations", _SUBTRACT)(
                (blocks,),
                (256,),
                (
                    Cpad,
                    np.int64(Cpad.shape[1]),
                    onsets,
                    ids,
                    amps.astype(np.float32, copy=False),
                    ctc,
                    np.int32(n_lags),
                    np.int64(n),
                    np.int32(parity),
                ),
            )


_WINDOW_SUMS = r"""
extern "C" __global__
void sum_windows_per_template(const float* residual, const long long n_chan,
                              const long long* onsets, const long long* first, const int nt0,
                              double* sums)
{
    // sums[i, s, c] = sum over the spikes k of template i (first[i] <= k < first[i+1], in
    // order) of residual[onsets[k] + s, c], in float64
    const long long i = blockIdx.y;
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long size = (long long)nt0 * n_chan;
    if (e >= size) return;
    const long long s = e / n_chan, c = e % n_chan;
    double acc = 0.0;
    for (long long k = first[i]; k < first[i + 1]; ++k)
        acc += (double)residual[(onsets[k] + s) * n_chan + c];
    sums[i * size + e] = acc;
}
"""


def sum_windows_per_template(residual, onsets, templates, n_templates: int, nt0: int):
    """Per-template sums of the residual windows ``residual[onset : onset+nt0]`` of spikes
    sorted by template (CuPy), float64 ``(n_templates, nt0, Nchan)``, each template's spikes
    added in their order (deterministic)."""
    import cupy
    import numpy as np

    n_chan = int(residual.shape[1])
    counts = cupy.bincount(templates, minlength=n_templates)[:n_templates]
    first = cupy.concatenate(
        [cupy.zeros(1, dtype=cupy.int64), cupy.cumsum(counts).astype(cupy.int64)]
    )
    sums = cupy.empty((n_templates, nt0, n_chan), dtype=cupy.float64)
    if n_templates == 0:
        return sums
    threads = 256
    grid = ((nt0 * n_chan + threads - 1) // threads, n_templates)
    _kernel("sum_windows_per_template", _WINDOW_SUMS)(
        grid,
        (threads,),
        (residual, np.int64(n_chan), cupy.ascontiguousarray(onsets), first, np.int32(nt0), sums),
    )
    return sums
