"""Generated probe motion: zigzag or smoothed random-walk displacement over time and depth."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kilosnake.groundtruth.presets import SynthConfig
from kilosnake.io.probe import Probe

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
    drift = Drift(
        config.drift,
        times,
        np.zeros(n_t),
        amp,
        config.drift_period_s,
        float(probe.yc.min()),
        float(probe.yc.max()),
        config.drift_scale_bottom,
        config.drift_scale_top,
    )
    if config.drift == "zigzag":
        drift.base_um = _triangle(times, amp, config.drift_period_s)
    elif config.drift == "randomwalk":
        drift.base_um = _smooth_random_walk(
            n_t, config.drift_timescale_s / config.drift_dt_s, amp, rng
        )
    return drift


def _smooth_random_walk(
    n: int, smooth_steps: float, range_um: float, rng: np.random.Generator
) -> np.ndarray:
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
