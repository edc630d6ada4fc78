"""Rendering a generated recording chunk by chunk: noise, spikes at their drifted positions, the
sync channel.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kilosnake.groundtruth.motion import Drift
from kilosnake.groundtruth.noise import NoiseModel
from kilosnake.groundtruth.presets import SYNC_HIGH, SynthConfig
from kilosnake.groundtruth.units import Units, local_channel_range, unit_template
from kilosnake.io.probe import Probe

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# writing the recording


class SpikeAdder:
    """Adds the spikes overlapping a window of samples to a float32 buffer."""

    def __init__(
        self,
        config: SynthConfig,
        probe: Probe,
        units: Units,
        drift: Drift,
        times: np.ndarray,
        spike_units: np.ndarray,
        amplitudes: np.ndarray,
    ):
        self.config = config
        self.units = units
        self.drift = drift
        self.times = times.astype(np.int64)
        self.spike_units = spike_units
        self.amplitudes = amplitudes
        self.ch_pos = probe.positions
        self.moving = drift.kind != "none" and drift.amplitude_um != 0
        self.ranges, self.templates = [], []
        self._last_moved = {}  # unit -> (quantised displacement, template)
        for i in range(units.n_units):
            pos = units.position[i]
            max_shift = (
                drift.max_abs(pos[1]) + config.drift_quantum_um + 2.0 if self.moving else 0.0
            )
            c0, c1 = local_channel_range(pos, self.ch_pos, config, max_shift)
            self.ranges.append((c0, c1))
            self.templates.append(
                None
                if self.moving
                else unit_template(units, i, pos, self.ch_pos[c0:c1], self.ch_pos, config)
            )

    def add(self, buf: np.ndarray, buf_start: int) -> int:
        """Add every spike whose waveform lies entirely in ``buf`` (starting at ``buf_start``).

        Callers pad their buffer by one template length on both sides, so every spike that
        touches the unpadded part is added whole. Spikes are added unit by unit, each unit's in
        time order, so a sample's value does not depend on how the recording is split into
        buffers. Returns the number of spikes added.
        """
        nt, trough = self.config.template_samples, self.config.trough_index
        lo = np.searchsorted(self.times, buf_start + trough, side="left")
        hi = np.searchsorted(self.times, buf_start + buf.shape[0] - nt + trough, side="right")
        sel = np.arange(lo, max(hi, lo))
        sel = sel[np.argsort(self.spike_units[sel], kind="stable")]
        for k in sel:
            u = int(self.spike_units[k])
            c0, c1 = self.ranges[u]
            s = int(self.times[k]) - trough - buf_start
            tmpl = self.templates[u] if not self.moving else self._moved_template(u, k, c0, c1)
            buf[s : s + nt, c0:c1] += self.amplitudes[k] * tmpl
        return int(sel.size)

    def _moved_template(self, u: int, k: int, c0: int, c1: int) -> np.ndarray:
        """Template of unit ``u`` at its position at the time of spike ``k``."""
        t_s = self.times[k] / self.config.sample_rate
        shift = float(self.drift.displacement(t_s, self.units.position[u, 1]))
        quantum = self.config.drift_quantum_um
        if quantum > 0:
            shift = round(shift / quantum) * quantum
        last = self._last_moved.get(u)
        if last is not None and last[0] == shift:
            return last[1]
        pos = self.units.position[u].copy()
        pos[1] += shift
        tmpl = unit_template(self.units, u, pos, self.ch_pos[c0:c1], self.ch_pos, self.config)
        self._last_moved[u] = (shift, tmpl)
        return tmpl


def sync_column(start: int, length: int, config: SynthConfig) -> np.ndarray:
    """The sync channel for samples ``[start, start + length)``: 1 Hz square wave or zeros."""
    if config.sync_mode == "zeros":
        return np.zeros(length, dtype=np.int16)
    half = int(round(config.sample_rate / 2))
    high = ((start + np.arange(length)) // half) % 2 == 0
    return np.where(high, SYNC_HIGH, 0).astype(np.int16)


def chunk_starts(config: SynthConfig) -> range:
    """First noise block of every chunk the file is written in."""
    return range(0, -(-config.n_samples // config.block_samples), config.chunk_blocks)


def render_chunk(
    b0: int, config: SynthConfig, noise: NoiseModel, adder: SpikeAdder
) -> tuple[np.ndarray, int, int]:
    """The file rows of the chunk starting at noise block ``b0``.

    Every noise block has its own random stream and the chunk is padded by a template on each
    side for the spikes that straddle its edges, so chunks can be computed in any order.

    Returns
    -------
    data : ndarray (rows, n_channels_total) int16
    first_sample : int
    clipped : int
        Samples clipped to the int16 range.
    """
    n, block = config.n_samples, config.block_samples
    n_blocks = -(-n // block)
    pad = config.template_samples
    b1 = min(b0 + config.chunk_blocks, n_blocks)
    s0, s1 = b0 * block, min(b1 * block, n)
    buf = np.zeros((s1 - s0 + 2 * pad, noise.n_channels), dtype=np.float32)
    for b in range(b0, b1):
        start = b * block
        length = min(block, n - start)
        buf[pad + start - s0 : pad + start - s0 + length] = noise.block(b, start, length)
    adder.add(buf, s0 - pad)
    data = buf[pad : pad + s1 - s0]
    np.rint(data, out=data)
    clipped = int(np.count_nonzero((data > 32767) | (data < -32768)))
    data = np.clip(data, -32768, 32767, out=data).astype(np.int16)
    if config.sync_channel:
        data = np.concatenate([data, sync_column(s0, s1 - s0, config)[:, None]], axis=1)
    return np.ascontiguousarray(data), s0, clipped


def write_binary(
    path: Path, config: SynthConfig, noise: NoiseModel, adder: SpikeAdder, workers: int = 1
) -> int:
    """Write the recording chunk by chunk to ``path``; returns the number of clipped samples.

    With ``workers`` > 1 the chunks are computed by that many processes and written at their
    offsets (:func:`write_binary_parallel`): the same bytes, faster on a many-core machine.
    """
    if workers > 1:
        return write_binary_parallel(path, config, noise, adder, workers)
    clipped = 0
    next_report = time.monotonic() + 10.0
    with open(path, "wb") as f:
        for b0 in chunk_starts(config):
            data, s0, n_clipped = render_chunk(b0, config, noise, adder)
            clipped += n_clipped
            f.write(data.tobytes())
            if time.monotonic() >= next_report:
                logger.info(
                    "synthetic recording: %.0f of %.0f s written",
                    (s0 + data.shape[0]) / config.sample_rate,
                    config.duration_s,
                )
                next_report = time.monotonic() + 10.0
    return clipped


#: the open output file and the models of a worker process of :func:`write_binary_parallel`
_WRITER = {}


def write_binary_parallel(path, config, noise, adder, workers: int) -> int:
    """What :func:`write_binary` writes, chunks shared out to a process pool.

    Every chunk (``chunk_blocks`` noise blocks, padded by a template on each side for the spikes
    that straddle its edges) is computed exactly as the serial writer does and written at its
    offset; returns the number of clipped samples.
    """
    starts = list(chunk_starts(config))
    with open(path, "wb") as f:
        f.truncate(config.n_samples * config.n_channels_total * 2)
    single_thread = {
        k: "1"
        for k in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMEXPR_NUM_THREADS",
        )
    }
    saved = {k: os.environ.get(k) for k in single_thread}
    os.environ.update(single_thread)  # inherited by the spawned workers
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_writer_init,
            initargs=(str(path), config, noise, adder),
        ) as pool:
            clipped = sum(pool.map(_write_chunk, starts, chunksize=1))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return int(clipped)


def _writer_init(path, config, noise, adder):
    _WRITER.update(
        path=path, config=config, noise=noise, adder=adder, fd=os.open(path, os.O_WRONLY)
    )


def _write_chunk(b0: int) -> int:
    """Compute and write the chunk starting at block ``b0`` (:func:`render_chunk`)."""
    config = _WRITER["config"]
    data, s0, clipped = render_chunk(b0, config, _WRITER["noise"], _WRITER["adder"])
    raw = data.tobytes()
    offset = s0 * config.n_channels_total * 2
    while raw:
        written = os.pwrite(_WRITER["fd"], raw, offset)
        raw, offset = raw[written:], offset + written
    return clipped
