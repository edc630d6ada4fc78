"""The ground-truth recording generator: files, determinism, spikes, noise, drift, CLI."""

import json

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from kilosnake.groundtruth.generate import generate, main
from kilosnake.groundtruth.presets import PRESETS, SYNC_HIGH, SynthConfig, preset_config
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.groundtruth.units import draw_spike_trains
from kilosnake.io.probe import load_probe, neuropixels_like, validate_probe


def tiny(**overrides) -> SynthConfig:
    """A recording small enough to write in well under a second."""
    settings = dict(n_channels=16, duration_s=2.0, n_units=3, block_s=0.5, chunk_blocks=1)
    settings.update(overrides)
    return SynthConfig(**settings)


def read_raw(paths) -> np.ndarray:
    meta = json.loads(paths.meta.read_text())
    return np.fromfile(paths.bin, dtype=np.int16).reshape(-1, meta["n_channels_total"])


def mean_snippet(raw, times, trough, n_t):
    """Mean waveform around ``times`` with each snippet's per-channel median removed."""
    snippets = np.stack([raw[t - trough : t - trough + n_t].astype(np.float64) for t in times])
    snippets -= np.median(snippets, axis=1, keepdims=True)  # the slow component and DC
    return snippets.mean(axis=0)


# --------------------------------------------------------------------------------------------
# files and determinism


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path):
    a = generate(tiny(), tmp_path / "a", seed=5)
    b = generate(tiny(), tmp_path / "b", seed=5)
    c = generate(tiny(), tmp_path / "c", seed=6)
    assert a.bin.read_bytes() == b.bin.read_bytes()
    assert a.bin.read_bytes() != c.bin.read_bytes()
    gt_a, gt_b = load_ground_truth(a.gt).arrays, load_ground_truth(b.gt).arrays
    np.testing.assert_array_equal(gt_a["spike_times"], gt_b["spike_times"])


@pytest.mark.parametrize("drift", ["none", "zigzag"])
def test_bytes_do_not_depend_on_chunking(tmp_path, drift):
    kw = dict(drift=drift, drift_amplitude_um=20.0, drift_period_s=1.0, n_units=4)
    one = generate(tiny(chunk_blocks=1, **kw), tmp_path / "one", seed=2)
    three = generate(tiny(chunk_blocks=3, **kw), tmp_path / "three", seed=2)
    assert one.bin.read_bytes() == three.bin.read_bytes()


def test_file_size_meta_and_no_temporary_files_left(tmp_path):
    cfg = tiny(duration_s=1.3)
    paths = generate(cfg, tmp_path, name="rec", seed=1)
    assert paths.bin.name == "rec.bin" and paths.gt.name == "rec_gt.npz"
    assert paths.bin.stat().st_size == cfg.n_samples * cfg.n_channels_total * 2
    meta = json.loads(paths.meta.read_text())
    assert meta["n_samples"] == cfg.n_samples == 39000
    assert meta["n_channels_total"] == 16 and meta["dtype"] == "int16"
    assert meta["sample_rate"] == 30000.0 and meta["uv_per_bit"] == pytest.approx(2.34)
    assert meta["seed"] == 1 and meta["n_units"] == 3 and meta["drift"]["kind"] == "none"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["rec.bin", "rec.probe.json", "rec_gt.npz", "rec.meta.json"]
    )


def test_probe_json_loads_and_validates(tmp_path):
    paths = generate(tiny(n_channels=32, n_shanks=2, duration_s=0.5), tmp_path)
    probe = load_probe(paths.probe)
    validate_probe(probe, 32)
    expected = neuropixels_like(32, 2)
    np.testing.assert_array_equal(np.sort(probe.chan_map), np.arange(32))
    order = np.argsort(probe.chan_map)
    np.testing.assert_allclose(probe.xc[order], expected.xc)
    np.testing.assert_allclose(probe.yc[order], expected.yc)
    assert np.unique(probe.kcoords).size == 2


def test_sync_channel_adds_one_column_and_leaves_the_rest(tmp_path):
    plain = generate(tiny(), tmp_path / "plain", seed=3)
    synced = generate(tiny(sync_channel=True), tmp_path / "sync", seed=3)
    raw_plain, raw_sync = read_raw(plain), read_raw(synced)
    assert raw_sync.shape == (raw_plain.shape[0], 17)
    np.testing.assert_array_equal(raw_sync[:, :16], raw_plain)
    assert set(np.unique(raw_sync[:, 16]).tolist()) == {0, SYNC_HIGH}
    assert np.all(raw_sync[:15000, 16] == SYNC_HIGH)  # high for the first half second
    zeros = generate(tiny(sync_channel=True, sync_mode="zeros"), tmp_path / "zeros", seed=3)
    assert not read_raw(zeros)[:, 16].any()


# --------------------------------------------------------------------------------------------
# spikes and templates


def test_spike_trains_are_sorted_in_bounds_and_refractory():
    cfg = tiny(duration_s=60.0, refractory_ms=2.0, edge_ms=2.0)
    rates = np.array([2.0, 10.0, 50.0, 200.0])
    times, units, amps = draw_spike_trains(cfg, rates, np.random.default_rng(0))
    assert times.dtype == np.uint64 and units.dtype == np.int64
    t = times.astype(np.int64)
    assert np.all(np.diff(t) >= 0)
    assert t.min() >= 60 and t.max() < cfg.n_samples - 60  # 2 ms at 30 kHz
    for u, rate in enumerate(rates):
        tu = t[units == u]
        assert np.diff(tu).min() >= 60
        expected = rate * 60.0
        assert abs(tu.size - expected) < 5 * np.sqrt(expected) + 2
    assert abs(amps.mean() - 1.0) < 0.01 and 0.08 < amps.std() < 0.12


def test_ground_truth_templates_snr_and_positions(tmp_path):
    cfg = tiny(n_channels=64, n_units=12, duration_s=0.5)
    gt = load_ground_truth(generate(cfg, tmp_path, seed=4).gt).arrays
    templates, trough = gt["templates"], gt["template_trough_index"]
    assert templates.shape == (12, cfg.template_samples, 64) and templates.dtype == np.float32
    assert trough == cfg.trough_index == 30
    peak = gt["peak_channel"]
    np.testing.assert_array_equal(peak, templates.min(axis=1).argmin(axis=1))
    # the trough sits at the trough index on the peak channel, at snr times the noise SD
    np.testing.assert_array_equal(templates[np.arange(12), :, peak].argmin(axis=1), trough)
    depth = -templates[np.arange(12), trough, peak]
    np.testing.assert_allclose(depth / gt["noise_sd"][peak], gt["snr"], rtol=1e-4)
    assert np.all((gt["snr"] >= 4.0) & (gt["snr"] <= 25.0))
    # a unit covers a neighbourhood of channels, and lies near the peak channel
    covered = (-templates.min(axis=1) > 0.1 * depth[:, None]).sum(axis=1)
    assert np.all((covered >= 5) & (covered <= 30)) and np.median(covered) >= 9
    pos = gt["unit_positions"]
    assert pos.shape == (12, 3) and np.all((pos[:, 2] >= 15) & (pos[:, 2] <= 40))
    gap = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(12) * 1e9
    assert gap.min() >= cfg.min_separation_um
    planar = np.linalg.norm(gt["channel_positions"][peak] - pos[:, :2], axis=1)
    assert planar.max() < 25.0
    assert np.abs(templates[:, [0, -1]]).max() < 1.0  # tapered ends
    assert gt["n_spikes"].sum() == gt["spike_times"].size


def test_recorded_trough_is_at_the_ground_truth_time(tmp_path):
    cfg = tiny(duration_s=6.0, n_units=2, snr_range=(15.0, 25.0), firing_rate_range_hz=(15, 20))
    paths = generate(cfg, tmp_path, seed=7)
    gt, raw = load_ground_truth(paths.gt).arrays, read_raw(paths)
    u = int(np.argmax(gt["snr"]))
    times = gt["spike_times"][gt["spike_units"] == u].astype(np.int64)
    assert times.size > 60
    trough, n_t = gt["template_trough_index"], cfg.template_samples
    mean = mean_snippet(raw, times, trough, n_t)
    peak = gt["peak_channel"][u]
    assert np.argmin(mean[:, peak]) == trough
    assert np.argmin(mean.min(axis=0)) == peak
    template = gt["templates"][u]
    template = template - np.median(template, axis=0)
    assert np.corrcoef(mean.ravel(), template.ravel())[0, 1] > 0.95
    assert mean[trough, peak] / template[trough, peak] == pytest.approx(1.0, abs=0.15)


# --------------------------------------------------------------------------------------------
# noise


def test_noise_is_spike_band_spatially_correlated_with_a_slow_component(tmp_path):
    cfg = tiny(n_channels=32, n_units=0, duration_s=2.0)
    paths = generate(cfg, tmp_path, seed=8)
    gt, raw = load_ground_truth(paths.gt).arrays, read_raw(paths).astype(np.float64)
    sos = butter(3, 300.0, "highpass", fs=cfg.sample_rate, output="sos")
    filtered = sosfiltfilt(sos, raw, axis=0)[3000:-3000]
    np.testing.assert_allclose(filtered.std(axis=0), gt["noise_sd"], rtol=0.08)
    assert np.all((gt["noise_sd"] > 9.0) & (gt["noise_sd"] < 13.0))
    assert raw.std(axis=0).min() > 2 * gt["noise_sd"].max()  # LFP-like component
    assert np.abs(raw.mean(axis=0)).max() > 20.0  # DC offsets
    corr = np.corrcoef(filtered.T)
    pos = gt["channel_positions"]
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    near = corr[(dist > 0) & (dist < 30)].mean()
    far = corr[dist > 200].mean()
    assert near > 0.15 and far < near - 0.1


# --------------------------------------------------------------------------------------------
# drift


@pytest.mark.parametrize(
    "kind, bottom, top", [("zigzag", 1.0, 1.0), ("randomwalk", 1.0, 1.0), ("zigzag", 0.2, 1.0)]
)
def test_drift_ground_truth_has_the_requested_amplitude(tmp_path, kind, bottom, top):
    cfg = tiny(
        n_units=0,
        duration_s=4.0,
        drift=kind,
        drift_amplitude_um=30.0,
        drift_period_s=2.0,
        drift_timescale_s=0.3,
        drift_scale_bottom=bottom,
        drift_scale_top=top,
    )
    paths = generate(cfg, tmp_path)
    gt = load_ground_truth(paths.gt).arrays
    d, t, depths = gt["drift_um"], gt["drift_times_s"], gt["drift_depths_um"]
    assert d.shape == (t.size, depths.size) and depths.size >= 2
    assert t[0] == 0.0 and t[-1] == pytest.approx(4.0) and np.all(np.diff(t) > 0)
    span = d.max(axis=0) - d.min(axis=0)
    assert span[-1] == pytest.approx(30.0 * top, abs=0.5)
    assert span[0] == pytest.approx(30.0 * bottom, abs=0.5)
    assert np.all(np.diff(span) >= -1e-4)  # grows linearly from bottom to top
    assert abs(d.max() + d.min()) < 1.0  # centred on zero
    if kind == "zigzag":
        assert abs(d[0]).max() < 1e-6 and d[5, -1] > 0  # starts at zero, rising
    meta = json.loads(paths.meta.read_text())
    assert meta["drift"]["kind"] == kind and meta["drift"]["amplitude_um"] == 30.0
    assert meta["drift"]["rigid"] == (bottom == top)


def test_drift_moves_the_units_across_the_channels(tmp_path):
    cfg = tiny(
        n_channels=32,
        n_units=3,
        duration_s=8.0,
        drift="zigzag",
        drift_amplitude_um=60.0,
        drift_period_s=4.0,
        snr_range=(15.0, 25.0),
        firing_rate_range_hz=(15.0, 20.0),
    )
    paths = generate(cfg, tmp_path, seed=11)
    gt, raw = load_ground_truth(paths.gt).arrays, read_raw(paths)
    ys = gt["channel_positions"][:, 1]
    inner = np.flatnonzero(
        (gt["unit_positions"][:, 1] > ys.min() + 40) & (gt["unit_positions"][:, 1] < ys.max() - 40)
    )
    assert inner.size
    u = inner[np.argmax(gt["snr"][inner])]
    times = gt["spike_times"][gt["spike_units"] == u].astype(np.int64)
    depth_column = np.argmin(np.abs(gt["drift_depths_um"] - gt["unit_positions"][u, 1]))
    shift = np.interp(times / cfg.sample_rate, gt["drift_times_s"], gt["drift_um"][:, depth_column])
    trough, n_t = gt["template_trough_index"], cfg.template_samples
    peak_depth = []
    for sel in (shift > 15.0, shift < -15.0):
        assert sel.sum() > 10
        mean = mean_snippet(raw, times[sel], trough, n_t)
        peak = np.argmin(mean.min(axis=0))
        assert np.argmin(mean[:, peak]) == trough  # still the trough on the current peak
        peak_depth.append(ys[peak])
    assert peak_depth[0] - peak_depth[1] >= 20.0


# --------------------------------------------------------------------------------------------
# presets and command line


def test_presets_and_overrides():
    assert set(PRESETS) == {
        "demo",
        "small",
        "np",
        "drift",
        "drift_randomwalk",
        "drift_nonrigid",
        "drift_static",
        "shanks4",
    }
    from kilosnake.params import PARAMS_BY_NAME

    assert set(PARAMS_BY_NAME["demo_preset"].choices) == set(PRESETS)
    static, moving = preset_config("drift_static"), preset_config("drift")
    assert static.drift == "none" and (static.n_units, static.duration_s) == (
        moving.n_units,
        moving.duration_s,
    )
    demo = preset_config("demo")
    assert (demo.n_channels, demo.duration_s, demo.n_units) == (32, 60.0, 10)
    assert (preset_config("small").duration_s, preset_config("small").n_units) == (300.0, 20)
    np_cfg = preset_config("np")
    assert (np_cfg.n_channels, np_cfg.n_units, np_cfg.n_samples) == (384, 150, 9_000_000)
    assert preset_config("drift").drift == "zigzag"
    assert preset_config("drift").drift_amplitude_um == 30.0
    assert preset_config("drift_randomwalk").drift == "randomwalk"
    nonrigid = preset_config("drift_nonrigid")
    assert nonrigid.drift_scale_bottom != nonrigid.drift_scale_top
    for name in ("drift", "drift_randomwalk", "drift_nonrigid"):
        cfg = preset_config(name)
        assert (cfg.n_channels, cfg.duration_s, cfg.n_units) == (64, 120.0, 40)
    over = preset_config("demo", duration_s=5.0, sync_channel=True)
    assert over.duration_s == 5.0 and over.n_channels_total == 33 and over.preset == "demo"
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("nope")
    with pytest.raises(ValueError, match="unknown"):
        preset_config("demo", n_chanels=8)
    with pytest.raises(ValueError, match="drift"):
        preset_config("demo", drift="sideways")


def test_cli_writes_the_four_files(tmp_path, capsys):
    rc = main(
        [
            "demo",
            str(tmp_path),
            "--seed",
            "3",
            "--name",
            "x",
            "-q",
            "--set",
            "duration_s=0.5",
            "--set",
            "n_channels=16",
            "--set",
            "snr_range=[5, 6]",
        ]
    )
    assert rc == 0
    assert "x.bin" in capsys.readouterr().out
    meta = json.loads((tmp_path / "x.meta.json").read_text())
    assert meta["seed"] == 3 and meta["preset"] == "demo" and meta["duration_s"] == 0.5
    assert meta["config"]["snr_range"] == [5.0, 6.0]
    for suffix in (".bin", ".probe.json", "_gt.npz"):
        assert (tmp_path / f"x{suffix}").exists()
