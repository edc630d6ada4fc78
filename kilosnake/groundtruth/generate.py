"""Ground-truth recordings: synthetic Neuropixels-like data with known spikes.

:func:`generate` writes, in ``out_dir``:

* ``<name>.bin``: int16, samples x channels interleaved; with ``sync_channel=True`` one extra
  last column carries a 1 Hz square wave (0 / 64) or zeros, as the Neuropixels sync channel;
* ``<name>.probe.json``: the probe as probeinterface JSON (``device_channel_indices`` 0..n-1);
* ``<name>_gt.npz``: the ground truth (read it with
  :func:`kilosnake.groundtruth.truth.load_ground_truth`, whose ``arrays`` lists the keys);
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
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from kilosnake.groundtruth.motion import drift_depths, make_drift
from kilosnake.groundtruth.noise import NoiseModel
from kilosnake.groundtruth.presets import (
    _STREAM_DRIFT,
    _STREAM_SPIKES,
    _STREAM_UNITS,
    PRESETS,
    SynthConfig,
    preset_config,
)
from kilosnake.groundtruth.render import SpikeAdder, write_binary
from kilosnake.groundtruth.units import (
    Units,
    draw_spike_trains,
    draw_units,
    full_templates,
    make_probe,
)
from kilosnake.io.probe import write_probeinterface_json
from kilosnake.version import __version__

logger = logging.getLogger(__name__)


"""Preset name -> overrides of the :class:`SynthConfig` defaults."""


@dataclasses.dataclass(frozen=True)
class SynthPaths:
    """Files written by :func:`generate`."""

    bin: Path
    probe: Path
    gt: Path
    meta: Path


def _replace_atomically(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    _replace_atomically(tmp, path)


def generate(
    preset_or_config,
    out_dir,
    name: str | None = None,
    seed: int = 0,
    workers: int = 1,
    probe=None,
) -> SynthPaths:
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
    probe : Probe, optional
        The contacts' layout (``n_channels`` contacts, ``chan_map`` 0..n-1); default: the
        Neuropixels-like layout of the configuration (``n_channels``, ``n_shanks``).

    Returns
    -------
    SynthPaths
        Paths of ``<name>.bin``, ``<name>.probe.json``, ``<name>_gt.npz``, ``<name>.meta.json``.
    """
    config = (
        preset_config(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    )
    config.validate()
    seed = int(seed)
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    name = name or (config.preset if config.preset != "custom" else "synth")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = SynthPaths(
        out_dir / f"{name}.bin",
        out_dir / f"{name}.probe.json",
        out_dir / f"{name}_gt.npz",
        out_dir / f"{name}.meta.json",
    )
    t_start = time.monotonic()

    def stream(key):
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))

    probe = make_probe(config) if probe is None else _given_probe(probe, config)
    noise = NoiseModel(config, probe, seed)
    units = draw_units(config, probe, noise.noise_sd, stream(_STREAM_UNITS))
    times, spike_units, amplitudes = draw_spike_trains(
        config, units.firing_rate, stream(_STREAM_SPIKES)
    )
    drift = make_drift(config, probe, stream(_STREAM_DRIFT))
    logger.info(
        "synthetic recording %s: %d channels, %.1f s, %d units, %d spikes, drift %s",
        name,
        config.n_channels,
        config.duration_s,
        units.n_units,
        times.size,
        config.drift,
    )

    tmp_bin = paths.bin.with_name(paths.bin.name + ".tmp")
    adder = SpikeAdder(config, probe, units, drift, times, spike_units, amplitudes)
    clipped = write_binary(tmp_bin, config, noise, adder, workers)
    if clipped:
        logger.warning("%d samples exceeded the int16 range and were clipped", clipped)

    probe_tmp = paths.probe.with_name(paths.probe.name + ".tmp")
    write_probeinterface_json(probe, probe_tmp)
    _replace_atomically(probe_tmp, paths.probe)
    _write_ground_truth(
        paths.gt, config, probe, noise, units, drift, times, spike_units, amplitudes
    )
    _write_json(paths.meta, _meta(config, paths, name, seed, units, times.size, clipped))
    _replace_atomically(tmp_bin, paths.bin)
    logger.info("synthetic recording %s written in %.1f s", paths.bin, time.monotonic() - t_start)
    return paths


def _given_probe(probe, config):
    """A caller's probe for ``config``: one contact per channel, rows 0..n-1 in order."""
    if probe.n_channels != config.n_channels or not np.array_equal(
        probe.chan_map, np.arange(config.n_channels)
    ):
        raise ValueError(
            f"the probe must have chan_map 0..{config.n_channels - 1} (one contact per channel)"
        )
    if np.unique(probe.kcoords).size != config.n_shanks:
        raise ValueError(f"the probe must have {config.n_shanks} shank(s), as the config says")
    probe = dataclasses.replace(probe)
    probe.n_channels_total = config.n_channels_total
    return probe


def _write_ground_truth(
    path: Path, config, probe, noise, units, drift, times, spike_units, amplitudes
) -> None:
    templates = full_templates(config, probe, units)
    peak_channel = templates.min(axis=1).argmin(axis=1) if units.n_units else np.zeros(0, np.int64)
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


def _meta(
    config: SynthConfig,
    paths: SynthPaths,
    name: str,
    seed: int,
    units: Units,
    n_spikes: int,
    clipped: int,
) -> dict:
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
        description="Write a synthetic Neuropixels-like recording with its ground truth.",
    )
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="file stem (default: the preset name)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set duration_s=10 --set sync_channel=true",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = preset_config(args.preset, **dict(args.overrides))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    t0 = time.monotonic()
    paths = generate(config, args.out_dir, name=args.name, seed=args.seed)
    print(
        f"wrote {paths.bin} ({config.n_channels_total} channels, {config.duration_s:g} s) "
        f"in {time.monotonic() - t0:.1f} s"
    )
    print(f"probe        {paths.probe}")
    print(f"ground truth {paths.gt}")
    print(f"metadata     {paths.meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
