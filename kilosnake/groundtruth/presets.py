"""The generator's configuration and its named presets (demo, small, drift, np, ...)."""

from __future__ import annotations

import dataclasses

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
        for name in (
            "snr_range",
            "firing_rate_range_hz",
            "z_range_um",
            "decay_length_range_um",
            "taper_um",
            "propagation_speed_range_um_per_ms",
            "noise_fractions",
            "lfp_freq_range_hz",
        ):
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
        for name in (
            "snr_range",
            "firing_rate_range_hz",
            "z_range_um",
            "decay_length_range_um",
            "taper_um",
            "propagation_speed_range_um_per_ms",
            "lfp_freq_range_hz",
        ):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                problems.append(f"{name} must be (low, high) with 0 < low <= high")
        if 1.0 / self.firing_rate_range_hz[1] <= self.refractory_ms / 1000.0:
            problems.append("the highest firing rate must leave room for the refractory period")
        if (
            len(self.noise_fractions) != 3
            or min(self.noise_fractions) < 0
            or abs(sum(self.noise_fractions) - 1.0) > 1e-6
        ):
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
    "demo": dict(n_channels=32, duration_s=60.0, n_units=10),
    "small": dict(n_channels=32, duration_s=300.0, n_units=20),
    "np": dict(n_channels=384, duration_s=300.0, n_units=150, sync_channel=True),
    "drift": dict(
        n_channels=64,
        duration_s=120.0,
        n_units=40,
        drift="zigzag",
        drift_amplitude_um=30.0,
        drift_period_s=60.0,
    ),
    "drift_randomwalk": dict(
        n_channels=64,
        duration_s=120.0,
        n_units=40,
        drift="randomwalk",
        drift_amplitude_um=30.0,
        drift_timescale_s=5.0,
    ),
    "drift_nonrigid": dict(
        n_channels=64,
        duration_s=120.0,
        n_units=40,
        drift="zigzag",
        drift_amplitude_um=30.0,
        drift_period_s=60.0,
        drift_scale_bottom=0.2,
        drift_scale_top=1.0,
    ),
    # the drift preset's recording without the motion, to measure what drift costs
    "drift_static": dict(n_channels=64, duration_s=120.0, n_units=40),
    # four shanks of 16 channels, 250 um apart: each shank is sorted on its own
    "shanks4": dict(n_channels=64, n_shanks=4, duration_s=30.0, n_units=16),
}


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
