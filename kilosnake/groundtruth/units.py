"""Generated units: positions, templates, firing rates and spike trains."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import numpy as np

from kilosnake.groundtruth.presets import SynthConfig
from kilosnake.io.probe import Probe, neuropixels_like

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# units


@dataclasses.dataclass
class Units:
    """Per-unit parameters (arrays of length n_units; times in ms, distances in µm)."""

    position: np.ndarray  # (n, 3) x, y, z at zero displacement
    shank: np.ndarray
    snr: np.ndarray
    firing_rate: np.ndarray
    decay_um: np.ndarray
    speed_um_per_ms: np.ndarray
    broadening: np.ndarray  # relative width increase per 100 µm beyond the peak channel
    fall_ms: np.ndarray  # trough Gaussian SD before the trough
    rise_ms: np.ndarray  # trough Gaussian SD after the trough
    rebound_ms: np.ndarray  # rebound centre after the trough
    rebound_width_ms: np.ndarray
    rebound_ratio: np.ndarray
    pre_ms: np.ndarray  # pre-trough bump centre before the trough
    pre_width_ms: np.ndarray
    pre_ratio: np.ndarray
    shift_ms: np.ndarray = None  # moves the summed waveform's minimum to t = 0
    norm: np.ndarray = None  # makes the trough -1
    source_amplitude: np.ndarray = None  # raw units at d = z

    @property
    def n_units(self) -> int:
        return int(self.snr.size)


def make_probe(config: SynthConfig) -> Probe:
    """The Neuropixels-like probe of ``config`` (``chan_map`` = 0..n-1)."""
    probe = neuropixels_like(config.n_channels, config.n_shanks)
    probe.n_channels_total = config.n_channels_total
    return probe


def place_units(config: SynthConfig, probe: Probe, rng: np.random.Generator):
    """Unit positions (n, 3) and shanks, spread along the probe, kept apart.

    Units are dealt to shanks in turn; on each shank their depths are stratified over the
    contacts' y span; x is uniform over the contacts' x span widened by ``x_margin_um``; z is
    uniform in ``z_range_um``. A unit closer than ``min_separation_um`` to one already placed is
    redrawn (first within its depth stratum, then anywhere on the shank).
    """
    n = config.n_units
    shanks = np.unique(probe.kcoords)
    unit_shank = shanks[rng.permutation(n) % shanks.size] if n else np.zeros(0)
    pos = np.zeros((n, 3))
    for s in shanks:
        idx = np.flatnonzero(unit_shank == s)
        on = probe.kcoords == s
        x_lo = probe.xc[on].min() - config.x_margin_um
        x_hi = probe.xc[on].max() + config.x_margin_um
        y_lo, y_hi = probe.yc[on].min(), probe.yc[on].max()
        strata = rng.permutation(idx.size)
        for k, i in enumerate(idx):
            lo = y_lo + (y_hi - y_lo) * strata[k] / idx.size
            hi = y_lo + (y_hi - y_lo) * (strata[k] + 1) / idx.size
            placed = pos[idx[:k]]
            for attempt in range(2000):
                if attempt == 200:
                    lo, hi = y_lo, y_hi
                cand = np.array(
                    [rng.uniform(x_lo, x_hi), rng.uniform(lo, hi), rng.uniform(*config.z_range_um)]
                )
                if (
                    not placed.size
                    or np.min(np.linalg.norm(placed - cand, axis=1)) >= config.min_separation_um
                ):
                    break
            else:
                logger.warning(
                    "unit %d is closer than %.0f µm to another unit: the probe is crowded",
                    i,
                    config.min_separation_um,
                )
            pos[i] = cand
    return pos, unit_shank


def draw_units(
    config: SynthConfig, probe: Probe, noise_sd: np.ndarray, rng: np.random.Generator
) -> Units:
    """Positions, waveforms, spatial spread, SNR and firing rate of every unit."""
    n = config.n_units
    pos, shank = place_units(config, probe, rng)

    def log_uniform(lo_hi):
        lo, hi = lo_hi
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    width = rng.uniform(0.75, 1.35, n)  # overall time scale: narrow to broad units
    fall = 0.07 * width * rng.uniform(0.85, 1.15, n)
    units = Units(
        position=pos,
        shank=shank,
        snr=log_uniform(config.snr_range),
        firing_rate=log_uniform(config.firing_rate_range_hz),
        decay_um=rng.uniform(*config.decay_length_range_um, n),
        speed_um_per_ms=rng.uniform(*config.propagation_speed_range_um_per_ms, n),
        broadening=rng.uniform(0.1, 0.4, n),
        fall_ms=fall,
        rise_ms=fall * rng.uniform(1.2, 1.8, n),
        rebound_ms=0.35 * width * rng.uniform(0.85, 1.2, n),
        rebound_width_ms=0.22 * width * rng.uniform(0.8, 1.25, n),
        rebound_ratio=rng.uniform(0.15, 0.5, n),
        pre_ms=0.22 * width,
        pre_width_ms=0.08 * width,
        pre_ratio=rng.uniform(0.0, 0.12, n),
    )
    units.shift_ms, units.norm = trough_alignment(units)
    ch_pos = probe.positions
    units.source_amplitude = np.zeros(n)
    for i in range(n):
        d = _distances(pos[i], ch_pos)
        peak = int(np.argmin(d))
        gain = _spatial_gain(d[peak], pos[i, 2], units.decay_um[i], config)
        units.source_amplitude[i] = units.snr[i] * noise_sd[peak] / gain
    return units


def _raw_waveform(t_ms, units: Units, i: int, width_scale=1.0):
    """Unshifted, unnormalised waveform of unit ``i`` (trough Gaussian centred on 0)."""
    t = np.asarray(t_ms)
    trough_sd = np.where(t < 0, units.fall_ms[i], units.rise_ms[i]) * width_scale
    w = -np.exp(-0.5 * (t / trough_sd) ** 2)
    w += units.rebound_ratio[i] * np.exp(
        -0.5 * ((t - units.rebound_ms[i]) / (units.rebound_width_ms[i] * width_scale)) ** 2
    )
    w += units.pre_ratio[i] * np.exp(
        -0.5 * ((t + units.pre_ms[i]) / (units.pre_width_ms[i] * width_scale)) ** 2
    )
    return w


def trough_alignment(units: Units):
    """Per-unit shift (ms) putting the waveform's minimum at t = 0, and the trough depth."""
    grid = np.arange(-0.3, 0.3, 1e-4)
    shift = np.zeros(units.n_units)
    norm = np.ones(units.n_units)
    for i in range(units.n_units):
        w = _raw_waveform(grid, units, i)
        k = int(np.argmin(w))
        shift[i] = grid[k]
        norm[i] = -float(_raw_waveform(np.array([grid[k]]), units, i)[0])
    return shift, norm


def _distances(position, ch_pos):
    """3-D distances (µm) from a unit at (x, y, z) to contacts at (x, y, 0)."""
    dx = ch_pos[:, 0] - position[0]
    dy = ch_pos[:, 1] - position[1]
    return np.sqrt(dx * dx + dy * dy + position[2] ** 2)


def _spatial_gain(d, z, decay, config: SynthConfig):
    """Amplitude at distance ``d`` of a unit ``z`` off the plane (1 at d = z)."""
    d = np.asarray(d, dtype=np.float64)
    excess = d - z
    lo, hi = config.taper_um
    fade = np.clip((excess - lo) / (hi - lo), 0.0, 1.0)
    return (
        (z / d) ** config.spatial_exponent
        * np.exp(-excess / decay)
        * np.cos(0.5 * np.pi * fade) ** 2
    )


@functools.lru_cache(maxsize=8)
def _time_taper(n_samples: int, trough: int) -> np.ndarray:
    """Window bringing a template smoothly to zero at both ends."""
    w = np.ones(n_samples)
    n_head = max(1, min(trough // 3, 8))
    n_tail = max(1, (n_samples - trough) // 4)
    w[:n_head] = np.sin(0.5 * np.pi * (np.arange(n_head) + 0.5) / n_head) ** 2
    w[-n_tail:] = np.cos(0.5 * np.pi * (np.arange(n_tail) + 0.5) / n_tail) ** 2
    return w


def unit_template(
    units: Units, i: int, position, ch_pos: np.ndarray, ch_nearest: np.ndarray, config: SynthConfig
) -> np.ndarray:
    """Waveform (n_t, n_ch) of unit ``i`` at ``position`` on channels ``ch_pos``, raw units.

    ``ch_nearest`` are the positions of all probe channels: the peak channel (delay 0, trough
    at :attr:`SynthConfig.trough_index`) is the one of them nearest to ``position``.
    """
    z = position[2]
    d = _distances(position, ch_pos)
    d_peak = _distances(position, ch_nearest).min()
    excess = np.maximum(d - d_peak, 0.0)
    gain = _spatial_gain(d, z, units.decay_um[i], config)
    delay = config.max_delay_ms * np.tanh(excess / units.speed_um_per_ms[i] / config.max_delay_ms)
    width_scale = 1.0 + units.broadening[i] * excess / 100.0
    nt, trough = config.template_samples, config.trough_index
    t = (np.arange(nt) - trough)[:, None] * (1000.0 / config.sample_rate) - delay[None, :]
    shape = _raw_waveform(t + units.shift_ms[i], units, i, width_scale[None, :]) / units.norm[i]
    shape *= _time_taper(nt, trough)[:, None]
    return (shape * (units.source_amplitude[i] * gain)[None, :]).astype(np.float32)


def local_channel_range(
    position, ch_pos: np.ndarray, config: SynthConfig, max_shift_um: float
) -> tuple[int, int]:
    """Contiguous channel range holding every channel a unit can reach, drift included."""
    z = position[2]
    reach = math.sqrt((z + config.taper_um[1]) ** 2 - z * z)
    dx = ch_pos[:, 0] - position[0]
    dy = np.maximum(np.abs(ch_pos[:, 1] - position[1]) - max_shift_um, 0.0)
    near = np.flatnonzero(dx * dx + dy * dy <= reach * reach)
    if near.size == 0:
        near = np.array([int(np.argmin(dx * dx + dy * dy))])
    return int(near.min()), int(near.max()) + 1


# --------------------------------------------------------------------------------------------
# spike trains


def draw_spike_trains(config: SynthConfig, firing_rate: np.ndarray, rng: np.random.Generator):
    """Dead-time Poisson spike trains of all units, sorted by time (then unit).

    Returns
    -------
    times : (n_spikes,) uint64
        Trough sample of each spike.
    units : (n_spikes,) int64
    amplitudes : (n_spikes,) float32
        Per-spike amplitude factor (mean 1).
    """
    fs = config.sample_rate
    ref = int(math.ceil(config.refractory_ms * fs / 1000.0 - 1e-9))
    edge = max(
        int(math.ceil(config.edge_ms * fs / 1000.0 - 1e-9)),
        config.trough_index,
        config.template_samples - config.trough_index,
    )
    first, stop = edge, config.n_samples - edge
    all_t, all_u = [], []
    for u, rate in enumerate(firing_rate):
        mean_gap = fs / rate - ref  # samples of the exponential part of each interval
        expected = (stop - first) / (fs / rate)
        n_draw = int(expected + 5 * math.sqrt(expected) + 20)
        gaps = ref + rng.exponential(mean_gap, n_draw)
        t = first + rng.exponential(mean_gap) + np.cumsum(gaps) - gaps[0]
        while t[-1] < stop:  # rare: draw more intervals
            t = np.concatenate([t, t[-1] + np.cumsum(ref + rng.exponential(mean_gap, n_draw))])
        t = np.floor(t[t < stop]).astype(np.int64)
        all_t.append(t)
        all_u.append(np.full(t.size, u, dtype=np.int64))
    times = np.concatenate(all_t) if all_t else np.zeros(0, np.int64)
    units = np.concatenate(all_u) if all_u else np.zeros(0, np.int64)
    order = np.lexsort((units, times))
    times, units = times[order], units[order]
    amplitudes = rng.normal(1.0, config.amplitude_jitter, times.size)
    amplitudes = np.clip(amplitudes, 0.5, 1.5).astype(np.float32)
    return times.astype(np.uint64), units, amplitudes


def full_templates(config: SynthConfig, probe: Probe, units: Units) -> np.ndarray:
    """Templates at zero displacement on every channel, (n_units, n_t, n_channels) float32."""
    out = np.zeros((units.n_units, config.template_samples, probe.n_channels), np.float32)
    for i in range(units.n_units):
        out[i] = unit_template(
            units, i, units.position[i], probe.positions, probe.positions, config
        )
    return out
