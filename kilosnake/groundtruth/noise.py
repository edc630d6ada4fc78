"""Generated noise: spatially correlated, per-channel scaled background."""

from __future__ import annotations

import math

import numpy as np

from kilosnake.groundtruth.presets import _STREAM_NOISE_BLOCK, _STREAM_NOISE_MODEL, SynthConfig
from kilosnake.io.probe import Probe

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
        self.independent_sd = (
            sd * math.sqrt(f_ind) * rng.uniform(1 - spread, 1 + spread, probe.n_channels)
        ).astype(np.float32)
        self.common_sd = np.float32(sd * math.sqrt(f_common))
        shanks, channel_shank = np.unique(probe.kcoords, return_inverse=True)
        self.n_shanks = shanks.size
        self.shank_columns = [
            _as_slice(np.flatnonzero(channel_shank == s)) for s in range(self.n_shanks)
        ]
        self.sources, self.tiles = self._smooth_basis(
            probe,
            sd * math.sqrt(f_smooth),
            config.noise_corr_length_um,
            config.noise_corr_length_um,
        )
        self.noise_sd = np.sqrt(
            self.independent_sd.astype(np.float64) ** 2 + sd * sd * (f_smooth + f_common)
        )
        self._init_lfp(config, probe, rng)
        self.dc = rng.normal(0.0, config.dc_offset_sd, probe.n_channels).astype(np.float32)

    @staticmethod
    def _smooth_basis(probe: Probe, sd: float, length_um: float, spacing_um: float, tile: int = 32):
        """Gaussian sources along each shank and their weights on channel tiles."""
        src = []
        for s in np.unique(probe.kcoords):
            on = probe.kcoords == s
            ys = np.arange(
                probe.yc[on].min() - 2 * length_um,
                probe.yc[on].max() + 2 * length_um + 1e-9,
                spacing_um,
            )
            src.append(np.stack([np.full(ys.size, probe.xc[on].mean()), ys], axis=1))
        src = np.concatenate(src)
        d2 = ((src[:, None, :] - probe.positions[None, :, :]) ** 2).sum(-1)
        weights = np.exp(-0.5 * d2 / length_um**2)
        weights[weights < 1e-3] = 0.0
        weights *= sd / np.sqrt((weights**2).sum(0, keepdims=True))
        tiles = []
        for c0 in range(0, probe.n_channels, tile):
            c1 = min(c0 + tile, probe.n_channels)
            rows = np.flatnonzero(weights[:, c0:c1].any(axis=1))
            s0, s1 = int(rows.min()), int(rows.max()) + 1
            tiles.append(
                (c0, c1, s0, s1, np.ascontiguousarray(weights[s0:s1, c0:c1], dtype=np.float32))
            )
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
        amp = config.lfp_sd * weight / np.sqrt(0.5 * (weight**2).sum()) if k else weight
        wavelength = rng.uniform(1000.0, 4000.0, k)
        offset = rng.uniform(0, 2 * np.pi, k)
        profile = 1.0 + 0.4 * np.sin(
            2 * np.pi * probe.yc[None, :] / wavelength[:, None] + offset[:, None]
        )
        self.lfp_profile = (amp[:, None] * profile).astype(np.float32)  # (k, n_channels)

    def block(self, index: int, start: int, length: int) -> np.ndarray:
        """Background of samples ``[start, start + length)`` (block ``index``), float32."""
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(_STREAM_NOISE_BLOCK, index))
        )
        out = rng.standard_normal((length, self.n_channels), dtype=np.float32)
        out *= self.independent_sd
        smooth = rng.standard_normal((length, self.sources), dtype=np.float32)
        for c0, c1, s0, s1, w in self.tiles:
            out[:, c0:c1] += smooth[:, s0:s1] @ w
        common = rng.standard_normal((length, self.n_shanks), dtype=np.float32)
        common *= self.common_sd
        for s, cols in enumerate(self.shank_columns):
            out[:, cols] += common[:, s : s + 1]
        if self.lfp_freq.size:
            t = (start + np.arange(length)) / self.fs
            waves = (
                1.0 + 0.3 * np.sin(2 * np.pi * self.lfp_mod_freq * t[:, None] + self.lfp_mod_phase)
            ) * np.sin(2 * np.pi * self.lfp_freq * t[:, None] + self.lfp_phase)
            out += waves.astype(np.float32) @ self.lfp_profile
        out += self.dc
        return out


def _as_slice(indices: np.ndarray):
    """A slice when ``indices`` are consecutive, else the indices."""
    if indices.size and np.all(np.diff(indices) == 1):
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return indices
