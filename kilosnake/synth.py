"""Ground-truth recordings: synthetic Neuropixels-like data with known spikes.

:func:`generate` writes, in ``out_dir``:

* ``<name>.bin``: int16, samples x channels interleaved; with ``sync_channel=True`` one extra
  last column carries a 1 Hz square wave (0 / 64) or zeros, as the Neuropixels sync channel;
* ``<name>.probe.json``: the probe as probeinterface JSON (``device_channel_indices`` 0..n-1);
* ``<name>_gt.npz``: the ground truth (see :func:`load_ground_truth` for the keys);
* ``<name>.meta.json``: sample rate, channel count, dtype, µV per bit, duration, preset, seed,
  drift settings and the whole configuration.

The model, in raw int16 units:

* **Units.** Each unit sits at a 3-D position: x inside the probe's x span (± a margin), y along
  the probe (stratified so units cover the whole length, at least ``min_separation_um`` apart)
  and z off the probe plane. Its waveform is biphasic (sharp negative trough, slower positive
  rebound, optional small positive bump before the trough) with per-unit widths and ratios.
  The amplitude on a channel at 3-D distance ``d`` is
  ``(z / d) ** spatial_exponent * exp(-(d - z) / decay)`` (tapered to zero ``taper_um`` beyond
  the plane distance), so a unit covers about 10 to 20 channels within ~60 µm. The waveform
  arrives later and slightly wider on channels farther away than the nearest one (propagation
  delay up to ``max_delay_ms``). The nearest channel is the peak channel; its trough is at the
  spike time, and ``snr`` times that channel's noise SD deep.
* **Spike trains.** Dead-time Poisson processes (absolute refractory period), rates drawn
  log-uniformly, per-spike amplitude factor ``N(1, amplitude_jitter)``, no spike closer than
  ``edge_ms`` (and never closer than the template length) to either end of the recording.
* **Noise.** Independent Gaussian noise per channel, a spatially smooth component (Gaussian
  sources along each shank, ``noise_corr_length_um`` wide and apart) and a common-mode
  component per shank; temporally white (spike band). On top: a slow LFP-like sum of
  amplitude-modulated sinusoids below ~30 Hz with smooth depth profiles, and a per-channel DC
  offset, both of which the sorter's high-pass filter removes.
* **Drift.** Units move along y relative to the probe: a triangle wave (``zigzag``) or a smooth
  bounded random walk (``randomwalk``), ``drift_amplitude_um`` peak to peak, centred on zero.
  The displacement at depth y is the base curve times a scale that varies linearly from
  ``drift_scale_bottom`` (lowest contact) to ``drift_scale_top`` (highest contact): 1 and 1 is
  rigid drift. Each spike's waveform is computed from the unit's displaced position at the spike
  time (rounded to ``drift_quantum_um``). Ground-truth templates and positions are those at zero
  displacement.

The recording is generated in chunks of whole noise blocks (``block_s``); every block's noise has
its own random stream derived from the seed and the block index, so the same seed gives the same
bytes whatever ``chunk_blocks`` is, and the memory used is a few chunks, not the recording.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .probe import Probe, neuropixels_like, write_probeinterface_json

logger = logging.getLogger(__name__)

# keys of the independent random streams derived from the seed
_STREAM_UNITS = 1
_STREAM_SPIKES = 2
_STREAM_DRIFT = 3
_STREAM_NOISE_MODEL = 4
_STREAM_NOISE_BLOCK = 5

SYNC_HIGH = 64  # value of the sync channel when high (bit 6, as SpikeGLX imec streams)
DRIFT_KINDS = ("none", "zigzag", "randomwalk")
SYNC_MODES = ("square", "zeros")


# --------------------------------------------------------------------------------------------
# configuration


@dataclasses.dataclass
class SynthConfig:
    """Every knob of the synthetic recording (units of each field in its name or comment)."""

    preset: str = "custom"
    # probe and recording
    n_channels: int = 32
    n_shanks: int = 1
    duration_s: float = 30.0
    sample_rate: float = 30000.0
    uv_per_bit: float = 2.34  # Neuropixels 1.0 at gain 500
    sync_channel: bool = False
    sync_mode: str = "square"  # "square" (1 Hz, 0/64) or "zeros"
    # units
    n_units: int = 10
    snr_range: tuple = (4.0, 25.0)  # peak-channel trough / noise SD, drawn log-uniformly
    firing_rate_range_hz: tuple = (2.0, 20.0)  # drawn log-uniformly
    refractory_ms: float = 2.0
    amplitude_jitter: float = 0.1  # SD of the per-spike amplitude factor around 1
    edge_ms: float = 2.0  # no spike this close to either end
    x_margin_um: float = 10.0  # units may sit this far outside the contacts' x span
    z_range_um: tuple = (15.0, 40.0)  # distance off the probe plane
    min_separation_um: float = 20.0  # 3-D distance between any two units
    decay_length_range_um: tuple = (20.0, 35.0)
    spatial_exponent: float = 0.5  # amplitude ~ (z / d) ** exponent * exp(-(d - z) / decay)
    taper_um: tuple = (70.0, 110.0)  # amplitude tapers to zero over this range of d - z
    propagation_speed_range_um_per_ms: tuple = (300.0, 600.0)
    max_delay_ms: float = 0.3
    template_pre_ms: float = 1.0  # template samples before the trough
    template_post_ms: float = 2.0  # template samples after the trough
    # noise (raw units)
    noise_sd: float = 11.0  # spike-band SD per channel (~26 µV at 2.34 µV/bit)
    noise_fractions: tuple = (0.7, 0.2, 0.1)  # variance shares: independent, smooth, common
    noise_corr_length_um: float = 30.0
    noise_channel_spread: float = 0.1  # independent part scaled by U(1 - s, 1 + s) per channel
    lfp_sd: float = 40.0
    lfp_components: int = 6
    lfp_freq_range_hz: tuple = (0.5, 30.0)
    dc_offset_sd: float = 50.0
    # drift
    drift: str = "none"  # "none", "zigzag" or "randomwalk"
    drift_amplitude_um: float = 0.0  # peak to peak, at scale 1
    drift_period_s: float = 60.0  # zigzag period
    drift_timescale_s: float = 5.0  # random-walk smoothing (Gaussian SD)
    drift_scale_bottom: float = 1.0
    drift_scale_top: float = 1.0
    drift_dt_s: float = 0.05  # time step of the saved displacement
    drift_depth_step_um: float = 20.0  # depth step of the saved displacement
    drift_quantum_um: float = 0.5  # waveforms are computed at displacements rounded to this
    # generation
    block_s: float = 1.0  # noise block (changes the bytes)
    chunk_blocks: int = 2  # blocks per written chunk (does not change the bytes)

    def __post_init__(self):
        for name in ("snr_range", "firing_rate_range_hz", "z_range_um", "decay_length_range_um",
                     "taper_um", "propagation_speed_range_um_per_ms", "noise_fractions",
                     "lfp_freq_range_hz"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))

    def validate(self) -> None:
        """Raise ``ValueError`` when the configuration cannot describe a recording."""
        problems = []
        if self.n_channels < 4 or self.n_shanks < 1 or self.n_channels % (2 * self.n_shanks):
            problems.append("n_channels must be >= 4 and a multiple of 2 * n_shanks")
        if self.duration_s <= 0 or self.sample_rate <= 0:
            problems.append("duration_s and sample_rate must be positive")
        if self.n_units < 0:
            problems.append("n_units must be >= 0")
        for name in ("snr_range", "firing_rate_range_hz", "z_range_um", "decay_length_range_um",
                     "taper_um", "propagation_speed_range_um_per_ms", "lfp_freq_range_hz"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                problems.append(f"{name} must be (low, high) with 0 < low <= high")
        if 1.0 / self.firing_rate_range_hz[1] <= self.refractory_ms / 1000.0:
            problems.append("the highest firing rate must leave room for the refractory period")
        if len(self.noise_fractions) != 3 or min(self.noise_fractions) < 0 or \
                abs(sum(self.noise_fractions) - 1.0) > 1e-6:
            problems.append("noise_fractions must be 3 non-negative shares summing to 1")
        if self.drift not in DRIFT_KINDS:
            problems.append(f"drift must be one of {DRIFT_KINDS}")
        if self.sync_mode not in SYNC_MODES:
            problems.append(f"sync_mode must be one of {SYNC_MODES}")
        if self.block_s * self.sample_rate < self.template_samples or self.chunk_blocks < 1:
            problems.append("block_s must hold at least one template and chunk_blocks >= 1")
        if self.drift_dt_s <= 0 or self.drift_period_s <= 0 or self.drift_timescale_s <= 0:
            problems.append("drift_dt_s, drift_period_s and drift_timescale_s must be positive")
        if problems:
            raise ValueError("invalid synthetic recording config: " + "; ".join(problems))

    @property
    def n_samples(self) -> int:
        """Samples in the recording."""
        return int(round(self.duration_s * self.sample_rate))

    @property
    def n_channels_total(self) -> int:
        """Columns of the binary file (probe channels plus the sync channel, if any)."""
        return self.n_channels + (1 if self.sync_channel else 0)

    @property
    def trough_index(self) -> int:
        """Index of the trough inside a template (samples before it)."""
        return int(round(self.template_pre_ms * self.sample_rate / 1000.0))

    @property
    def template_samples(self) -> int:
        """Samples per template."""
        return self.trough_index + int(round(self.template_post_ms * self.sample_rate / 1000.0))

    @property
    def block_samples(self) -> int:
        """Samples per noise block."""
        return int(round(self.block_s * self.sample_rate))


PRESETS: dict[str, dict] = {
    "demo": dict(n_channels=32, duration_s=30.0, n_units=10),
    "small": dict(n_channels=32, duration_s=300.0, n_units=20),
    "np": dict(n_channels=384, duration_s=300.0, n_units=150, sync_channel=True),
    "drift": dict(n_channels=64, duration_s=120.0, n_units=40, drift="zigzag",
                  drift_amplitude_um=30.0, drift_period_s=60.0),
    "drift_randomwalk": dict(n_channels=64, duration_s=120.0, n_units=40, drift="randomwalk",
                             drift_amplitude_um=30.0, drift_timescale_s=5.0),
    "drift_nonrigid": dict(n_channels=64, duration_s=120.0, n_units=40, drift="zigzag",
                           drift_amplitude_um=30.0, drift_period_s=60.0,
                           drift_scale_bottom=0.2, drift_scale_top=1.0),
    # the drift preset's recording without the motion, to measure what drift costs
    "drift_static": dict(n_channels=64, duration_s=120.0, n_units=40),
    # four shanks of 16 channels, 250 um apart: each shank is sorted on its own
    "shanks4": dict(n_channels=64, n_shanks=4, duration_s=30.0, n_units=16),
}
"""Preset name -> overrides of the :class:`SynthConfig` defaults."""


def preset_config(name: str, **overrides) -> SynthConfig:
    """The configuration of preset ``name`` with ``overrides`` applied.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`.
    **overrides
        Any :class:`SynthConfig` field.

    Returns
    -------
    SynthConfig
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown synthetic recording setting(s) {unknown}")
    cfg = SynthConfig(**{"preset": name, **PRESETS[name], **overrides})
    cfg.validate()
    return cfg


@dataclasses.dataclass(frozen=True)
class SynthPaths:
    """Files written by :func:`generate`."""

    bin: Path
    probe: Path
    gt: Path
    meta: Path


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
                cand = np.array([rng.uniform(x_lo, x_hi), rng.uniform(lo, hi),
                                 rng.uniform(*config.z_range_um)])
                if not placed.size or np.min(np.linalg.norm(placed - cand, axis=1)) >= \
                        config.min_separation_um:
                    break
            else:
                logger.warning("unit %d is closer than %.0f µm to another unit: the probe is "
                               "crowded", i, config.min_separation_um)
            pos[i] = cand
    return pos, unit_shank


def draw_units(config: SynthConfig, probe: Probe, noise_sd: np.ndarray,
               rng: np.random.Generator) -> Units:
    """Positions, waveforms, spatial spread, SNR and firing rate of every unit."""
    n = config.n_units
    pos, shank = place_units(config, probe, rng)

    def log_uniform(lo_hi):
        lo, hi = lo_hi
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    width = rng.uniform(0.75, 1.35, n)  # overall time scale: narrow to broad units
    fall = 0.07 * width * rng.uniform(0.85, 1.15, n)
    units = Units(
        position=pos, shank=shank,
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
        -0.5 * ((t - units.rebound_ms[i]) / (units.rebound_width_ms[i] * width_scale)) ** 2)
    w += units.pre_ratio[i] * np.exp(
        -0.5 * ((t + units.pre_ms[i]) / (units.pre_width_ms[i] * width_scale)) ** 2)
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
    return ((z / d) ** config.spatial_exponent * np.exp(-excess / decay)
            * np.cos(0.5 * np.pi * fade) ** 2)


@functools.lru_cache(maxsize=8)
def _time_taper(n_samples: int, trough: int) -> np.ndarray:
    """Window bringing a template smoothly to zero at both ends."""
    w = np.ones(n_samples)
    n_head = max(1, min(trough // 3, 8))
    n_tail = max(1, (n_samples - trough) // 4)
    w[:n_head] = np.sin(0.5 * np.pi * (np.arange(n_head) + 0.5) / n_head) ** 2
    w[-n_tail:] = np.cos(0.5 * np.pi * (np.arange(n_tail) + 0.5) / n_tail) ** 2
    return w


def unit_template(units: Units, i: int, position, ch_pos: np.ndarray, ch_nearest: np.ndarray,
                  config: SynthConfig) -> np.ndarray:
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


def local_channel_range(position, ch_pos: np.ndarray, config: SynthConfig,
                        max_shift_um: float) -> tuple[int, int]:
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
    edge = max(int(math.ceil(config.edge_ms * fs / 1000.0 - 1e-9)), config.trough_index,
               config.template_samples - config.trough_index)
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


# --------------------------------------------------------------------------------------------
# drift


@dataclasses.dataclass
class Drift:
    """Displacement of the tissue (units) along y relative to the probe, in µm."""

    kind: str
    times_s: np.ndarray  # grid of the saved displacement
    base_um: np.ndarray  # displacement at scale 1 on the grid
    amplitude_um: float
    period_s: float
    y_bottom: float
    y_top: float
    scale_bottom: float
    scale_top: float

    def scale(self, y):
        """Scale of the base displacement at depth ``y`` (linear from bottom to top)."""
        span = max(self.y_top - self.y_bottom, 1e-9)
        f = np.clip((np.asarray(y, dtype=np.float64) - self.y_bottom) / span, 0.0, 1.0)
        return self.scale_bottom + (self.scale_top - self.scale_bottom) * f

    def base(self, t_s):
        """Displacement at scale 1 at times ``t_s``."""
        t_s = np.asarray(t_s, dtype=np.float64)
        if self.kind == "zigzag":
            return _triangle(t_s, self.amplitude_um, self.period_s)
        if self.kind == "randomwalk":
            return np.interp(t_s, self.times_s, self.base_um)
        return np.zeros_like(t_s)

    def displacement(self, t_s, y):
        """Displacement (µm) at times ``t_s`` of tissue at depth ``y`` (broadcast)."""
        return self.base(t_s) * self.scale(y)

    def max_abs(self, y) -> float:
        """Largest |displacement| at depth ``y`` over the recording."""
        if not self.base_um.size:
            return 0.0
        return float(np.max(np.abs(self.base_um)) * abs(self.scale(y)))

    def field(self, depths_um):
        """Displacement on the saved grid, (n_times, n_depths) float32."""
        return (self.base_um[:, None] * self.scale(depths_um)[None, :]).astype(np.float32)


def _triangle(t_s, amplitude_um, period_s):
    """Triangle wave starting at 0, rising first, ``amplitude_um`` peak to peak."""
    phase = np.mod(np.asarray(t_s) / period_s + 0.25, 1.0)  # t = 0: value 0, rising
    return amplitude_um * (0.5 - 2.0 * np.abs(phase - 0.5))


def make_drift(config: SynthConfig, probe: Probe, rng: np.random.Generator) -> Drift:
    """The drift of ``config`` on a grid of ``drift_dt_s``."""
    n_t = int(math.floor(config.duration_s / config.drift_dt_s)) + 1
    times = np.arange(n_t) * config.drift_dt_s
    amp = config.drift_amplitude_um if config.drift != "none" else 0.0
    drift = Drift(config.drift, times, np.zeros(n_t), amp, config.drift_period_s,
                  float(probe.yc.min()), float(probe.yc.max()),
                  config.drift_scale_bottom, config.drift_scale_top)
    if config.drift == "zigzag":
        drift.base_um = _triangle(times, amp, config.drift_period_s)
    elif config.drift == "randomwalk":
        drift.base_um = _smooth_random_walk(n_t, config.drift_timescale_s / config.drift_dt_s,
                                            amp, rng)
    return drift


def _smooth_random_walk(n: int, smooth_steps: float, range_um: float,
                        rng: np.random.Generator) -> np.ndarray:
    """A Gaussian-smoothed random walk rescaled to span exactly ``range_um``, centred on 0."""
    from scipy.ndimage import gaussian_filter1d

    walk = gaussian_filter1d(np.cumsum(rng.standard_normal(n)), smooth_steps, mode="nearest")
    span = walk.max() - walk.min()
    if n < 2 or span <= 0 or range_um == 0:
        return np.zeros(n)
    return (walk - walk.min()) / span * range_um - range_um / 2.0


def drift_depths(config: SynthConfig, probe: Probe) -> np.ndarray:
    """Depths (µm) at which the displacement is saved: the contacts' y span."""
    lo, hi = float(probe.yc.min()), float(probe.yc.max())
    n = max(2, int(round((hi - lo) / config.drift_depth_step_um)) + 1)
    return np.linspace(lo, hi, n)


# --------------------------------------------------------------------------------------------
# noise


class NoiseModel:
    """Background signal of every channel: spike-band noise, LFP-like signal and DC offset.

    :meth:`block` is a pure function of the block index: each block draws from its own random
    stream, so blocks can be generated in any order and any grouping.
    """

    def __init__(self, config: SynthConfig, probe: Probe, seed: int):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_NOISE_MODEL,)))
        self.seed = seed
        self.fs = config.sample_rate
        self.n_channels = probe.n_channels
        f_ind, f_smooth, f_common = config.noise_fractions
        sd = config.noise_sd
        spread = config.noise_channel_spread
        self.independent_sd = (sd * math.sqrt(f_ind) *
                               rng.uniform(1 - spread, 1 + spread, probe.n_channels)
                               ).astype(np.float32)
        self.common_sd = np.float32(sd * math.sqrt(f_common))
        shanks, channel_shank = np.unique(probe.kcoords, return_inverse=True)
        self.n_shanks = shanks.size
        self.shank_columns = [_as_slice(np.flatnonzero(channel_shank == s))
                              for s in range(self.n_shanks)]
        self.sources, self.tiles = self._smooth_basis(probe, sd * math.sqrt(f_smooth),
                                                      config.noise_corr_length_um,
                                                      config.noise_corr_length_um)
        self.noise_sd = np.sqrt(self.independent_sd.astype(np.float64) ** 2
                                + sd * sd * (f_smooth + f_common))
        self._init_lfp(config, probe, rng)
        self.dc = rng.normal(0.0, config.dc_offset_sd, probe.n_channels).astype(np.float32)

    @staticmethod
    def _smooth_basis(probe: Probe, sd: float, length_um: float, spacing_um: float,
                      tile: int = 32):
        """Gaussian sources along each shank and their weights on channel tiles."""
        src = []
        for s in np.unique(probe.kcoords):
            on = probe.kcoords == s
            ys = np.arange(probe.yc[on].min() - 2 * length_um,
                           probe.yc[on].max() + 2 * length_um + 1e-9, spacing_um)
            src.append(np.stack([np.full(ys.size, probe.xc[on].mean()), ys], axis=1))
        src = np.concatenate(src)
        d2 = ((src[:, None, :] - probe.positions[None, :, :]) ** 2).sum(-1)
        weights = np.exp(-0.5 * d2 / length_um ** 2)
        weights[weights < 1e-3] = 0.0
        weights *= sd / np.sqrt((weights ** 2).sum(0, keepdims=True))
        tiles = []
        for c0 in range(0, probe.n_channels, tile):
            c1 = min(c0 + tile, probe.n_channels)
            rows = np.flatnonzero(weights[:, c0:c1].any(axis=1))
            s0, s1 = int(rows.min()), int(rows.max()) + 1
            tiles.append((c0, c1, s0, s1,
                          np.ascontiguousarray(weights[s0:s1, c0:c1], dtype=np.float32)))
        return src.shape[0], tiles

    def _init_lfp(self, config: SynthConfig, probe: Probe, rng: np.random.Generator):
        """Slow sinusoids with amplitude modulation and smooth depth profiles."""
        k = config.lfp_components
        lo, hi = config.lfp_freq_range_hz
        self.lfp_freq = np.exp(rng.uniform(np.log(lo), np.log(hi), k))
        self.lfp_phase = rng.uniform(0, 2 * np.pi, k)
        self.lfp_mod_freq = rng.uniform(0.05, 0.3, k)
        self.lfp_mod_phase = rng.uniform(0, 2 * np.pi, k)
        weight = 1.0 / np.sqrt(self.lfp_freq)  # more power at lower frequencies
        amp = config.lfp_sd * weight / np.sqrt(0.5 * (weight ** 2).sum()) if k else weight
        wavelength = rng.uniform(1000.0, 4000.0, k)
        offset = rng.uniform(0, 2 * np.pi, k)
        profile = 1.0 + 0.4 * np.sin(2 * np.pi * probe.yc[None, :] / wavelength[:, None]
                                     + offset[:, None])
        self.lfp_profile = (amp[:, None] * profile).astype(np.float32)  # (k, n_channels)

    def block(self, index: int, start: int, length: int) -> np.ndarray:
        """Background of samples ``[start, start + length)`` (block ``index``), float32."""
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(_STREAM_NOISE_BLOCK, index)))
        out = rng.standard_normal((length, self.n_channels), dtype=np.float32)
        out *= self.independent_sd
        smooth = rng.standard_normal((length, self.sources), dtype=np.float32)
        for c0, c1, s0, s1, w in self.tiles:
            out[:, c0:c1] += smooth[:, s0:s1] @ w
        common = rng.standard_normal((length, self.n_shanks), dtype=np.float32)
        common *= self.common_sd
        for s, cols in enumerate(self.shank_columns):
            out[:, cols] += common[:, s:s + 1]
        if self.lfp_freq.size:
            t = (start + np.arange(length)) / self.fs
            waves = (1.0 + 0.3 * np.sin(2 * np.pi * self.lfp_mod_freq * t[:, None]
                                         + self.lfp_mod_phase)) * \
                np.sin(2 * np.pi * self.lfp_freq * t[:, None] + self.lfp_phase)
            out += waves.astype(np.float32) @ self.lfp_profile
        out += self.dc
        return out


def _as_slice(indices: np.ndarray):
    """A slice when ``indices`` are consecutive, else the indices."""
    if indices.size and np.all(np.diff(indices) == 1):
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return indices


# --------------------------------------------------------------------------------------------
# writing the recording


class SpikeAdder:
    """Adds the spikes overlapping a window of samples to a float32 buffer."""

    def __init__(self, config: SynthConfig, probe: Probe, units: Units, drift: Drift,
                 times: np.ndarray, spike_units: np.ndarray, amplitudes: np.ndarray):
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
            max_shift = drift.max_abs(pos[1]) + config.drift_quantum_um + 2.0 if self.moving \
                else 0.0
            c0, c1 = local_channel_range(pos, self.ch_pos, config, max_shift)
            self.ranges.append((c0, c1))
            self.templates.append(None if self.moving else
                                  unit_template(units, i, pos, self.ch_pos[c0:c1],
                                                self.ch_pos, config))

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
            buf[s:s + nt, c0:c1] += self.amplitudes[k] * tmpl
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


def render_chunk(b0: int, config: SynthConfig, noise: NoiseModel,
                 adder: SpikeAdder) -> tuple[np.ndarray, int, int]:
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
        buf[pad + start - s0:pad + start - s0 + length] = noise.block(b, start, length)
    adder.add(buf, s0 - pad)
    data = buf[pad:pad + s1 - s0]
    np.rint(data, out=data)
    clipped = int(np.count_nonzero((data > 32767) | (data < -32768)))
    data = np.clip(data, -32768, 32767, out=data).astype(np.int16)
    if config.sync_channel:
        data = np.concatenate([data, sync_column(s0, s1 - s0, config)[:, None]], axis=1)
    return np.ascontiguousarray(data), s0, clipped


def write_binary(path: Path, config: SynthConfig, noise: NoiseModel, adder: SpikeAdder) -> int:
    """Write the recording chunk by chunk to ``path``; returns the number of clipped samples."""
    clipped = 0
    next_report = time.monotonic() + 10.0
    with open(path, "wb") as f:
        for b0 in chunk_starts(config):
            data, s0, n_clipped = render_chunk(b0, config, noise, adder)
            clipped += n_clipped
            f.write(data.tobytes())
            if time.monotonic() >= next_report:
                logger.info("synthetic recording: %.0f of %.0f s written",
                            (s0 + data.shape[0]) / config.sample_rate, config.duration_s)
                next_report = time.monotonic() + 10.0
    return clipped


def full_templates(config: SynthConfig, probe: Probe, units: Units) -> np.ndarray:
    """Templates at zero displacement on every channel, (n_units, n_t, n_channels) float32."""
    out = np.zeros((units.n_units, config.template_samples, probe.n_channels), np.float32)
    for i in range(units.n_units):
        out[i] = unit_template(units, i, units.position[i], probe.positions, probe.positions,
                               config)
    return out


def _replace_atomically(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    _replace_atomically(tmp, path)


def generate(preset_or_config, out_dir, name: str | None = None, seed: int = 0) -> SynthPaths:
    """Write a synthetic recording with its probe, ground truth and metadata.

    Parameters
    ----------
    preset_or_config : str or SynthConfig
        A preset name (see :data:`PRESETS`) or a full configuration.
    out_dir : path
        Folder for the files (created if needed).
    name : str, optional
        File stem; defaults to the preset name.
    seed : int
        Seed of every random draw; the same seed and configuration give the same bytes.

    Returns
    -------
    SynthPaths
        Paths of ``<name>.bin``, ``<name>.probe.json``, ``<name>_gt.npz``, ``<name>.meta.json``.
    """
    config = preset_config(preset_or_config) if isinstance(preset_or_config, str) else \
        preset_or_config
    config.validate()
    seed = int(seed)
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    name = name or (config.preset if config.preset != "custom" else "synth")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = SynthPaths(out_dir / f"{name}.bin", out_dir / f"{name}.probe.json",
                       out_dir / f"{name}_gt.npz", out_dir / f"{name}.meta.json")
    t_start = time.monotonic()

    def stream(key):
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))

    probe = make_probe(config)
    noise = NoiseModel(config, probe, seed)
    units = draw_units(config, probe, noise.noise_sd, stream(_STREAM_UNITS))
    times, spike_units, amplitudes = draw_spike_trains(config, units.firing_rate,
                                                       stream(_STREAM_SPIKES))
    drift = make_drift(config, probe, stream(_STREAM_DRIFT))
    logger.info("synthetic recording %s: %d channels, %.1f s, %d units, %d spikes, drift %s",
                name, config.n_channels, config.duration_s, units.n_units, times.size,
                config.drift)

    tmp_bin = paths.bin.with_name(paths.bin.name + ".tmp")
    adder = SpikeAdder(config, probe, units, drift, times, spike_units, amplitudes)
    clipped = write_binary(tmp_bin, config, noise, adder)
    if clipped:
        logger.warning("%d samples exceeded the int16 range and were clipped", clipped)

    probe_tmp = paths.probe.with_name(paths.probe.name + ".tmp")
    write_probeinterface_json(probe, probe_tmp)
    _replace_atomically(probe_tmp, paths.probe)
    _write_ground_truth(paths.gt, config, probe, noise, units, drift, times, spike_units,
                        amplitudes)
    _write_json(paths.meta, _meta(config, paths, name, seed, units, times.size, clipped))
    _replace_atomically(tmp_bin, paths.bin)
    logger.info("synthetic recording %s written in %.1f s", paths.bin, time.monotonic() - t_start)
    return paths


def _write_ground_truth(path: Path, config, probe, noise, units, drift, times, spike_units,
                        amplitudes) -> None:
    templates = full_templates(config, probe, units)
    peak_channel = (templates.min(axis=1).argmin(axis=1) if units.n_units
                    else np.zeros(0, np.int64))
    depths = drift_depths(config, probe)
    arrays = dict(
        spike_times=times.astype(np.uint64),
        spike_units=spike_units.astype(np.int64),
        spike_amplitudes=amplitudes.astype(np.float32),
        templates=templates,
        template_trough_index=np.int64(config.trough_index),
        unit_positions=units.position.astype(np.float64),
        unit_shank=units.shank.astype(np.int64),
        snr=units.snr.astype(np.float64),
        peak_channel=peak_channel.astype(np.int64),
        firing_rate=units.firing_rate.astype(np.float64),
        n_spikes=np.bincount(spike_units, minlength=units.n_units).astype(np.int64),
        noise_sd=noise.noise_sd.astype(np.float64),
        channel_positions=probe.positions,
        sample_rate=np.float64(config.sample_rate),
        drift_times_s=drift.times_s.astype(np.float64),
        drift_depths_um=depths,
        drift_um=drift.field(depths),
    )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    _replace_atomically(tmp, path)


def _meta(config: SynthConfig, paths: SynthPaths, name: str, seed: int, units: Units,
          n_spikes: int, clipped: int) -> dict:
    return {
        "name": name,
        "generator": f"kilosnake.synth {__version__}",
        "sample_rate": config.sample_rate,
        "n_channels_total": config.n_channels_total,
        "n_channels": config.n_channels,
        "sync_channel": config.sync_channel,
        "dtype": "int16",
        "uv_per_bit": config.uv_per_bit,
        "duration_s": config.n_samples / config.sample_rate,
        "n_samples": config.n_samples,
        "preset": config.preset,
        "seed": seed,
        "n_units": units.n_units,
        "n_spikes": int(n_spikes),
        "noise_sd": config.noise_sd,
        "clipped_samples": clipped,
        "drift": {
            "kind": config.drift,
            "amplitude_um": config.drift_amplitude_um if config.drift != "none" else 0.0,
            "period_s": config.drift_period_s,
            "timescale_s": config.drift_timescale_s,
            "scale_bottom": config.drift_scale_bottom,
            "scale_top": config.drift_scale_top,
            "rigid": config.drift_scale_bottom == config.drift_scale_top,
        },
        "files": {"bin": paths.bin.name, "probe": paths.probe.name, "gt": paths.gt.name},
        "config": dataclasses.asdict(config),
    }


def load_ground_truth(path) -> dict:
    """Read ``<name>_gt.npz``.

    Returns
    -------
    dict
        ``spike_times`` (uint64, trough sample on the peak channel, sorted), ``spike_units``
        (int64), ``spike_amplitudes`` (per-spike factor), ``templates`` (n_units, n_t,
        n_channels) float32 raw units at zero displacement, ``template_trough_index`` (int),
        ``unit_positions`` (n_units, 3) µm x, y, z, ``unit_shank``, ``snr``, ``peak_channel``,
        ``firing_rate`` (Hz, the drawn rate), ``n_spikes``, ``noise_sd`` (per channel, raw
        units), ``channel_positions``, ``sample_rate`` (float), ``drift_times_s`` (n_times,),
        ``drift_depths_um`` (n_depths,), ``drift_um`` (n_times, n_depths): displacement of the
        units along y relative to the probe (positive: towards larger y), zero everywhere
        without drift.
    """
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: (f[k].item() if f[k].ndim == 0 else f[k]) for k in f.files}


# --------------------------------------------------------------------------------------------
# command line


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key.strip(), parsed


def main(argv=None) -> int:
    """``kilosnake-synth PRESET OUT_DIR [--seed N] [--name NAME] [--set KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="kilosnake-synth",
        description="Write a synthetic Neuropixels-like recording with its ground truth.")
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="file stem (default: the preset name)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        type=_parse_override, metavar="KEY=VALUE",
                        help="override a setting, e.g. --set duration_s=10 --set sync_channel=true")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = preset_config(args.preset, **dict(args.overrides))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    t0 = time.monotonic()
    paths = generate(config, args.out_dir, name=args.name, seed=args.seed)
    print(f"wrote {paths.bin} ({config.n_channels_total} channels, {config.duration_s:g} s) "
          f"in {time.monotonic() - t0:.1f} s")
    print(f"probe        {paths.probe}")
    print(f"ground truth {paths.gt}")
    print(f"metadata     {paths.meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
