"""CUDA kernels of the preprocessing loop on a GPU: one kernel for the channel offsets and the
common median reference, one for the forward-backward filter, one for the rounding to int16.

Each computes what the array code of :mod:`kilosnake.preprocess.filters` computes on the CPU,
with the same float32 operations in the same order and no fused multiply-adds, so a batch
filtered here equals the CPU's bit for bit. They replace chains of array operations that each
launch kernels and write full-size temporaries (CuPy's ``sosfilt`` alone runs several kernels
and some Python per call), which on a GPU cost more host time than the arithmetic itself.
"""

from __future__ import annotations

import numpy as np

from kilosnake.runtime.kernels import compiled_kernel

_OFFSETS_AND_MEDIAN = r"""
extern "C" __global__
void offsets_and_median_reference(const short* __restrict__ raw,
                                  const float* __restrict__ offsets, float* __restrict__ x,
                                  const long long n_rows, const int n_chan, const int P,
                                  const int car)
{
    // one warp per row (sample): x = raw - offsets, then, with car, minus the row's median
    // (NumPy's: the middle value, or the mean of the middle two), found by a bitonic sort of
    // the row in shared memory (P: a power of two >= n_chan, padded with +inf)
    extern __shared__ float rows[];
    const int lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5;
    const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + w;
    if (r >= n_rows) return;  // the whole warp: r depends on the warp alone
    const short* in = raw + r * n_chan;
    float* out = x + r * n_chan;
    if (!car) {
        for (int c = lane; c < n_chan; c += 32) out[c] = __fsub_rn((float)in[c], offsets[c]);
        return;
    }
    float* s = rows + (long long)w * P;
    for (int c = lane; c < P; c += 32)
        s[c] = c < n_chan ? __fsub_rn((float)in[c], offsets[c]) : __int_as_float(0x7f800000);
    __syncwarp();
    for (int k = 2; k <= P; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = lane; i < P; i += 32) {
                const int l = i ^ j;
                if (l > i) {
                    const float a = s[i], b = s[l];
                    if ((a > b) == ((i & k) == 0)) { s[i] = b; s[l] = a; }
                }
            }
            __syncwarp();
        }
    }
    const int h = n_chan / 2;
    const float m = (n_chan & 1) ? s[h] : __fdiv_rn(__fadd_rn(s[h - 1], s[h]), 2.0f);
    for (int c = lane; c < n_chan; c += 32)
        out[c] = __fsub_rn(__fsub_rn((float)in[c], offsets[c]), m);
}
"""

_SOS_FORWARD_BACKWARD = r"""
// N_SECTIONS second-order sections; AHEAD samples are loaded while the ones before are filtered

struct Sections {
    float b0[N_SECTIONS], b1[N_SECTIONS], b2[N_SECTIONS], a1[N_SECTIONS], a2[N_SECTIONS];
    float z0[N_SECTIONS], z1[N_SECTIONS];

    __device__ __forceinline__ void reset() {
        #pragma unroll
        for (int s = 0; s < N_SECTIONS; ++s) { z0[s] = 0.0f; z1[s] = 0.0f; }
    }

    // SciPy's sosfilt step (direct form II transposed), operation for operation
    __device__ __forceinline__ float step(float v) {
        #pragma unroll
        for (int s = 0; s < N_SECTIONS; ++s) {
            const float out = __fadd_rn(__fmul_rn(b0[s], v), z0[s]);
            z0[s] = __fadd_rn(__fsub_rn(__fmul_rn(b1[s], v), __fmul_rn(a1[s], out)), z1[s]);
            z1[s] = __fsub_rn(__fmul_rn(b2[s], v), __fmul_rn(a2[s], out));
            v = out;
        }
        return v;
    }
};

// one pass over a column (stride n_chan), forward or backward, from zero state; in may be out
__device__ __forceinline__ void filter_pass(Sections& f, const float* in, float* out,
                                            const long long n, const int n_chan,
                                            const bool backward)
{
    f.reset();
    const long long full = n / AHEAD * AHEAD;
    float ahead[AHEAD];
    #define AT(i) ((backward ? n - 1 - (i) : (i)) * n_chan)
    if (full > 0) {
        #pragma unroll
        for (int k = 0; k < AHEAD; ++k) ahead[k] = in[AT(k)];
    }
    long long i = 0;
    for (; i < full; i += AHEAD) {
        float cur[AHEAD];
        #pragma unroll
        for (int k = 0; k < AHEAD; ++k) cur[k] = ahead[k];
        if (i + AHEAD < full) {
            #pragma unroll
            for (int k = 0; k < AHEAD; ++k) ahead[k] = in[AT(i + AHEAD + k)];
        }
        #pragma unroll
        for (int k = 0; k < AHEAD; ++k) out[AT(i + k)] = f.step(cur[k]);
    }
    for (; i < n; ++i) out[AT(i)] = f.step(in[AT(i)]);
    #undef AT
}

extern "C" __global__
void sos_forward_backward(const float* x, float* y, const float* __restrict__ sos,
                          const long long n_samples, const int n_chan)
{
    // one thread per channel of x (n_samples, n_chan): forward into y, then backward in place
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_chan) return;
    Sections f;
    #pragma unroll
    for (int s = 0; s < N_SECTIONS; ++s) {
        f.b0[s] = sos[6 * s]; f.b1[s] = sos[6 * s + 1]; f.b2[s] = sos[6 * s + 2];
        f.a1[s] = sos[6 * s + 4]; f.a2[s] = sos[6 * s + 5];
    }
    filter_pass(f, x + c, y + c, n_samples, n_chan, false);
    filter_pass(f, y + c, y + c, n_samples, n_chan, true);
}
"""

_ROUNDED_INT16 = r"""
extern "C" __global__
void rounded_int16(const float* __restrict__ v, const float scale, short* __restrict__ y,
                   const long long n)
{
    // round(v * scale) clipped to int16, as NumPy's rint and clip compute it in float32
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float t = rintf(__fmul_rn(v[i], scale));
    y[i] = (short)fminf(fmaxf(t, -32768.0f), 32767.0f);
}
"""

#: rows of the median kernel: channels sorted in shared memory, at most this many
MAX_SORTED_CHANNELS = 2048

#: warps (rows) per block of the median kernel
_ROWS_PER_BLOCK = 4


def handles_batch(raw) -> bool:
    """Whether the kernels filter this (time, channel) raw batch (int16 samples, at most
    :data:`MAX_SORTED_CHANNELS` channels); otherwise the array code does."""
    return raw.dtype == np.int16 and 0 < raw.shape[1] <= MAX_SORTED_CHANNELS


def offsets_and_median_reference(raw, offsets, car: bool):
    """``float32(raw) - offsets``, then minus each row's median when ``car`` (CuPy, C-ordered
    (time, channel) int16 in, float32 out)."""
    import cupy

    raw = cupy.ascontiguousarray(raw)
    n_rows, n_chan = raw.shape
    x = cupy.empty((n_rows, n_chan), dtype=cupy.float32)
    if n_rows == 0:
        return x
    P = max(32, 1 << (n_chan - 1).bit_length())
    grid = (n_rows + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    compiled_kernel("offsets_and_median_reference", _OFFSETS_AND_MEDIAN)(
        (grid,),
        (32 * _ROWS_PER_BLOCK,),
        (raw, offsets, x, np.int64(n_rows), np.int32(n_chan), np.int32(P), np.int32(bool(car))),
        shared_mem=(_ROWS_PER_BLOCK * P * 4) if car else 0,
    )
    return x


#: samples of a column loaded ahead while the ones before are filtered (hides memory latency)
FILTER_AHEAD = 64


def sos_forward_backward(x, sos, ahead: int = FILTER_AHEAD):
    """The sections ``sos`` (float32, (n, 6), on the GPU) run forward then backward over every
    column of ``x`` (float32 (time, channel)), from zero state: a new array."""
    import cupy

    x = cupy.ascontiguousarray(x)
    n_samples, n_chan = x.shape
    y = cupy.empty_like(x)
    if x.size == 0:
        return y
    options = (f"-DN_SECTIONS={int(sos.shape[0])}", f"-DAHEAD={int(ahead)}")
    kernel = compiled_kernel("sos_forward_backward", _SOS_FORWARD_BACKWARD, options)
    kernel(
        ((n_chan + 31) // 32,),
        (32,),
        (x, y, cupy.ascontiguousarray(sos), np.int64(n_samples), np.int32(n_chan)),
    )
    return y


def rounded_int16(v, scale: float):
    """``clip(rint(v * float32(scale)), -32768, 32767)`` as int16 (CuPy float32 in)."""
    import cupy

    v = cupy.ascontiguousarray(v)
    y = cupy.empty(v.shape, dtype=cupy.int16)
    if v.size:
        compiled_kernel("rounded_int16", _ROUNDED_INT16)(
            ((v.size + 255) // 256,), (256,), (v, np.float32(scale), y, np.int64(v.size))
        )
    return y
