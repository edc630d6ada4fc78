"""Tiny synthetic whitened recordings with known spikes, for the sorting tests and examples.

Unlike :mod:`kilosnake.synth` (raw recordings that go through the whole pipeline), these are
already "preprocessed": unit-variance white noise plus spike waveforms, written as a
``preprocessed.zarr`` store with the layout of ``docs/stores.md``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kilosnake.io.probe import Probe, write_probe_arrays
from kilosnake.io.store import writing_store
from kilosnake.io.traces import create_traces


@dataclasses.dataclass
class ToyRecording:
    """Whitened traces and their ground truth."""

    traces: np.ndarray  # (n_samples, Nchan) float32
    probe: Probe
    sample_rate: float
    spike_times: np.ndarray  # (n,) int64 peak samples
    spike_units: np.ndarray  # (n,) int64
    spike_amplitudes: np.ndarray  # (n,) float64 scale of each spike's waveform
    waveforms: np.ndarray  # (n_units, nt0, Nchan) unit waveforms, peak at nt0min


def linear_probe(n_channels: int, pitch: float = 20.0) -> Probe:
    """Two staggered columns of contacts, ``pitch`` µm between rows."""
    idx = np.arange(n_channels)
    xc = np.where(idx % 2 == 0, 0.0, 32.0)
    yc = (idx // 2) * pitch
    return Probe(idx, xc, yc, np.zeros(n_channels), n_channels, "toy")


def temporal_shape(nt0: int, nt0min: int, width: float = 2.5) -> np.ndarray:
    """A biphasic spike shape: negative peak of -1 at ``nt0min`` and a slower positive lobe."""
    t = np.arange(nt0, dtype=np.float64) - nt0min
    trough = -np.exp(-(t**2) / (2 * (width / 2.0) ** 2))
    lobe = 0.35 * np.exp(-((t - 3 * width) ** 2) / (2 * (1.5 * width) ** 2))
    return trough + lobe


def unit_waveform(
    probe: Probe,
    channel: int,
    amplitude: float,
    nt0: int,
    nt0min: int,
    width: float = 2.5,
    spread_um: float = 25.0,
) -> np.ndarray:
    """(nt0, Nchan) waveform centred on ``channel`` with peak ``-amplitude`` there."""
    d = np.hypot(probe.xc - probe.xc[channel], probe.yc - probe.yc[channel])
    spatial = np.exp(-(d**2) / (2 * spread_um**2))
    return amplitude * np.outer(temporal_shape(nt0, nt0min, width), spatial)


def add_spikes(
    traces: np.ndarray, waveforms: np.ndarray, times, units, scales, nt0min: int
) -> None:
    """Add ``scale · waveform[unit]`` with its peak at each time (clipped at the edges)."""
    nt0 = waveforms.shape[1]
    for t, u, a in zip(times, units, scales):
        start = int(t) - nt0min
        lo, hi = max(start, 0), min(start + nt0, traces.shape[0])
        if hi > lo:
            traces[lo:hi] += a * waveforms[u, lo - start : hi - start]


def make_toy_recording(
    n_channels: int = 16,
    duration_s: float = 4.0,
    sample_rate: float = 30000.0,
    n_units: int = 4,
    amplitudes=(14.0, 18.0, 22.0, 26.0),
    rate_hz: float = 12.0,
    nt0: int = 61,
    nt0min: int = 20,
    seed: int = 0,
    noise: float = 1.0,
) -> ToyRecording:
    """Unit-variance white noise plus ``n_units`` units firing as refractory Poisson trains.

    Units sit on channels spread evenly along the probe, with widths differing slightly so that
    their waveforms are distinguishable.
    """
    rng = np.random.default_rng(seed)
    probe = linear_probe(n_channels)
    n_samples = int(round(duration_s * sample_rate))
    traces = (noise * rng.standard_normal((n_samples, n_channels))).astype(np.float64)
    channels = np.linspace(1, n_channels - 2, n_units).round().astype(int)
    amps = np.resize(np.asarray(amplitudes, dtype=np.float64), n_units)
    widths = 2.0 + 1.2 * (np.arange(n_units) % 3) / 2.0
    waveforms = np.stack(
        [unit_waveform(probe, c, a, nt0, nt0min, w) for c, a, w in zip(channels, amps, widths)]
    )
    times, units = [], []
    refractory = int(0.002 * sample_rate)
    for u in range(n_units):
        n = rng.poisson(rate_hz * duration_s)
        t = np.sort(rng.integers(nt0, n_samples - nt0, size=n))
        t = t[np.concatenate([[True], np.diff(t) > refractory])[: t.size]]
        times.append(t)
        units.append(np.full(t.size, u))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.lexsort((units, times))
    times, units = times[order], units[order]
    scales = rng.uniform(0.9, 1.1, size=times.size)
    add_spikes(traces, waveforms, times, units, scales, nt0min)
    return ToyRecording(
        traces.astype(np.float32),
        probe,
        sample_rate,
        times.astype(np.int64),
        units.astype(np.int64),
        scales,
        waveforms,
    )


def write_preprocessed_store(
    path, traces: np.ndarray, probe: Probe, sample_rate: float, NT: int, scaleproc: float = 200.0
) -> None:
    """A ``preprocessed.zarr`` with the layout of ``docs/stores.md`` from whitened traces."""
    data = np.clip(np.rint(np.asarray(traces) * scaleproc), -32768, 32767).astype(np.int16)
    attrs = {
        "scaleproc": scaleproc,
        "NT": int(NT),
        "sample_rate": float(sample_rate),
        "n_samples": int(data.shape[0]),
        "n_channels_total": probe.n_channels,
        "dat": "toy",
        "dtype": "int16",
    }
    with writing_store(path, "preprocess", {"NT": int(NT)}, "cpu", 0, attrs) as g:
        create_traces(g, *data.shape, NT)[...] = data
        write_probe_arrays(g, probe)
