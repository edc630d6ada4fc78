"""The MEArec benchmark's conversion: what MEArec wrote becomes a probe, a ground truth and a
metadata file that kilosnake's loaders and scorer read (MEArec itself is not needed)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kilosnake.groundtruth.score import score_spike_trains
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.io.probe import load_probe

ROOT = Path(__file__).resolve().parent.parent
FS = 32000.0
N_CHANNELS = 8
N_SAMPLES = 64000
NOISE_UV = 10.0
LAG = 5  # samples from "MEArec's" spike time to the trough


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("mearec_bench", ROOT / "benchmarks" / "mearec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_fake_generated(files: dict, uv_per_bit: float) -> dict:
    """Two units with known troughs, added to white noise, as the generate step writes them."""
    rng = np.random.default_rng(0)
    traces = rng.normal(0, NOISE_UV, (N_SAMPLES, N_CHANNELS))
    shape = -np.exp(-0.5 * ((np.arange(-20, 21)) / 4.0) ** 2)  # trough at its centre
    truth = {0: (3, 120.0), 1: (6, 60.0)}  # unit: (peak channel, trough µV)
    times, units = [], []
    for unit, (channel, amp) in truth.items():
        t = np.arange(500 + 97 * unit, N_SAMPLES - 500, 1601 + 13 * unit)
        for s in t:
            traces[s + LAG - 20 : s + LAG + 21, channel] += amp * shape
            traces[s + LAG - 20 : s + LAG + 21, channel - 1] += 0.3 * amp * shape
        times.append(t)
        units.append(np.full(t.size, unit))
    np.round(traces / uv_per_bit).astype("<i2").tofile(files["bin"])
    positions = np.zeros((N_CHANNELS, 3))
    positions[:, 1] = np.tile([-8.0, 8.0], N_CHANNELS // 2)
    positions[:, 2] = 20.0 * np.arange(N_CHANNELS)
    np.savez(
        files["mearec"],
        spike_samples=np.concatenate(times),
        spike_units=np.concatenate(units),
        channel_positions=positions,
        sample_rate=np.float64(FS),
        uv_per_bit=np.float64(uv_per_bit),
        n_samples=np.int64(N_SAMPLES),
        clipped_samples=np.int64(0),
        template_locations=np.zeros((2, 3)),
        cell_types=np.array(["L5_TTPC1", "L5_BP"]),
        bursting=np.array([False, True]),
        snr_mearec=np.array([12.0, 6.0]),
    )
    return truth


def test_conversion_aligns_spikes_to_the_trough_and_measures_snr(tmp_path):
    bench = _benchmark_module()
    files = bench.generated_files(tmp_path, "fake")
    truth = _write_fake_generated(files, bench.UV_PER_BIT)
    meta = bench.convert_for_kilosnake(files, "mearec_static", seed=0)

    assert meta["trough_shift_samples"] == [LAG, LAG]
    assert json.loads(files["meta"].read_text())["n_channels_total"] == N_CHANNELS
    gt = load_ground_truth(files["gt"])
    assert gt.sample_rate == FS
    with np.load(files["mearec"]) as raw:
        shifted = np.sort(raw["spike_samples"] + LAG)
    np.testing.assert_array_equal(np.sort(gt.times.astype(np.int64)), shifted)
    assert np.all(np.diff(gt.times.astype(np.int64)) >= 0)
    for unit, (channel, amp) in truth.items():
        assert gt.arrays["peak_channel"][unit] == channel
        assert gt.snr[unit] == pytest.approx(amp / NOISE_UV, rel=0.1)

    result = score_spike_trains(gt.times, gt.units, gt.times, gt.units, FS, gt_snr=gt.snr)
    assert result.summary["n_well_detected"] == 2

    probe = load_probe(files["probe"])
    np.testing.assert_array_equal(probe.yc, 20.0 * np.arange(N_CHANNELS))
    np.testing.assert_array_equal(probe.chan_map, np.arange(N_CHANNELS))
