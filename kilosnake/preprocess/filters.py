"""Filtering of raw batches: Butterworth high-pass (or band-pass) forward and backward, common
median reference.
"""

from __future__ import annotations

import math

import numpy as np

from kilosnake.io.probe import Probe
from kilosnake.io.recording import RawRecording
from kilosnake.preprocess import kernels
from kilosnake.runtime.backend import Backend

# --------------------------------------------------------------------------------------------
# filtering


def butterworth_sos(
    fshigh: float, sample_rate: float, fslow: float | None = None, be: Backend | None = None
) -> np.ndarray:
    """Second-order sections of the 3rd-order Butterworth high-pass (or band-pass) filter.

    Designed by the signal module of ``be`` (SciPy's by default; CuPy's on the GPU, where SciPy's
    signal package, 1 s to import, is then not needed at all); returned as a NumPy array.
    """
    if be is None:
        import scipy.signal as signal
    else:
        signal = be.signal
    nyquist = sample_rate / 2
    if fslow is not None and fslow < nyquist:
        sos = signal.butter(3, [fshigh / nyquist, fslow / nyquist], btype="bandpass", output="sos")
    else:
        sos = signal.butter(3, fshigh / nyquist, btype="highpass", output="sos")
    return be.to_host(sos) if be is not None else np.asarray(sos)


def filter_margin(fshigh: float, sample_rate: float, ntbuff: int = 0) -> int:
    """Samples needed on each side of a batch for the filter's start-up transient to vanish.

    The slowest pole pair of a 3rd-order Butterworth high-pass decays with time constant
    ``1 / (pi * fshigh)``; 12 time constants bring a transient below 1e-5 of its size.
    """
    return max(int(ntbuff), int(math.ceil(12 * sample_rate / (math.pi * fshigh))))


def filter_forward_backward(x, sos, be: Backend):
    """Causal filter forward, then again on the time-reversed output (zero initial state)."""
    sos = be.asarray(sos, dtype=x.dtype)
    y = be.signal.sosfilt(sos, x, axis=0)
    y = be.signal.sosfilt(sos, y[::-1], axis=0)
    return be.xp.ascontiguousarray(y[::-1])


def common_median_reference(x, be: Backend):
    """Subtract, at every sample, the median across channels."""
    return x - median_across_channels(x, be)[:, None]


def median_across_channels(x, be: Backend):
    """The median of every row of ``x`` (time, channel): NumPy's ``median(x, axis=1)``.

    On the CPU the rows are sorted instead (NumPy's vectorised sort of short rows is about 6-10x
    faster than the selection ``median`` runs row by row) and the middle one or two values taken
    as ``median`` takes them: the same values, bit for bit, for data without NaNs.
    """
    if be.name == "gpu":
        return be.xp.median(x, axis=1)
    n = x.shape[1]
    ordered = np.sort(x, axis=1)
    if n % 2:
        return ordered[:, n // 2]
    return np.mean(ordered[:, n // 2 - 1 : n // 2 + 1], axis=1)


def batch_constants(offsets, sos, be: Backend):
    """``offsets`` and ``sos`` as :func:`filter_batch` uses them (float32 arrays of ``be``), to
    move once before a loop over batches: on a GPU, moving them with every batch costs a
    host-to-device copy each, and each such copy waits for the GPU's queued work."""
    return be.asarray(offsets, dtype=be.xp.float32), be.asarray(sos, dtype=be.xp.float32)


def filter_batch(raw_batch, offsets, sos, car: bool, be: Backend):
    """Offsets, CAR and high-pass on one (time, channel) batch; returns float32.

    On a GPU (``be.use_kernels``) an int16 batch goes through the kernels of
    :mod:`kilosnake.preprocess.kernels`, which compute the same values bit for bit.
    """
    if be.use_kernels and kernels.handles_batch(raw_batch):
        offsets, sos = batch_constants(offsets, sos, be)  # no copy when already moved
        x = kernels.offsets_and_median_reference(be.asarray(raw_batch), offsets, car)
        return kernels.sos_forward_backward(x, sos)
    x = be.asarray(raw_batch).astype(be.xp.float32)  # moved as stored, converted on the device
    x -= be.asarray(offsets, dtype=be.xp.float32)[None, :]
    if car:
        x = common_median_reference(x, be)
    return filter_forward_backward(x, sos, be)


def read_filtered_batch(
    rec: RawRecording,
    probe: Probe,
    offsets,
    b: int,
    NT: int,
    margin: int,
    sos,
    car: bool,
    be: Backend,
    raw=None,
):
    """Batch ``b`` (samples [b*NT, (b+1)*NT) clipped to the recording), filtered, float32
    (``raw``: the batch with its margins, already read by
    :class:`kilosnake.io.prefetch.RawBatches`).
    """
    start, stop = b * NT, min((b + 1) * NT, rec.n_samples)
    if raw is None:
        raw = rec.read(start - margin, stop + margin, probe.chan_map)
    x = filter_batch(raw, offsets, sos, car, be)
    return x[margin : margin + (stop - start)]
