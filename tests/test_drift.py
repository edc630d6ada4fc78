"""Drift estimation and correction: accuracy against synthetic drift, auto-off, the reader."""

import numpy as np
import pytest
from backends import backends_agree
from pictures import assert_picture, drift_size

from kilosnake.drift.detection import unwhitening_matrix
from kilosnake.drift.estimate import estimate_drift, run_drift
from kilosnake.drift.plot import run_drift_plot
from kilosnake.drift.registration import corrected_depths, register_shank
from kilosnake.drift.suitability import registration_check
from kilosnake.errors import KilosnakeError
from kilosnake.groundtruth.drift_error import rms_error_um, true_displacement_per_batch
from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.io.corrected_traces import (
    DriftCorrectedReader,
    KrigingInterpolator,
    write_corrected_traces,
)
from kilosnake.io.drift_store import (
    KERNELS,
    KRIGING_KERNEL,
    DriftEstimate,
    empty_spikes,
    read_drift_store,
    write_drift_store,
)
from kilosnake.io.probe import Probe, load_probe, neuropixels_like, write_probe_arrays
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.store import open_store, writing_store
from kilosnake.io.traces import PreprocessedReader, create_traces
from kilosnake.params import resolve
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening
from kilosnake.runtime.backend import cpu_backend

NT = 15000  # 0.5 s batches: 32 batches in 16 s
FS = 30000.0
#: short, small versions of the drift presets (32 channels = 320 µm, 20 busy units)
SHORT = dict(n_channels=32, duration_s=16.0, n_units=20, firing_rate_range_hz=(5.0, 30.0))
#: a displacement estimate this far (RMS, µm) from the truth fails; no estimate at all is
#: about 9 µm away for the 30 µm peak-to-peak presets
RMS_BOUND_UM = 3.0


# --------------------------------------------------------------------------------------------
# fixtures: short synthetic recordings, preprocessed


def preprocessed_recording(folder, preset, **overrides):
    """Generate ``preset`` (shortened) in ``folder`` and preprocess it; returns the folder."""
    cfg = preset_config(preset, **{**SHORT, **overrides})
    paths = generate(cfg, folder, name="rec", seed=3)
    info = RecordingInfo(str(paths.bin), cfg.n_channels_total, "int16", cfg.sample_rate)
    p = resolve({"NT": NT, "device": "cpu"})
    compute_whitening(info, load_probe(paths.probe), p, cpu_backend(), folder / "whitening.zarr")
    preprocess_recording(
        info, folder / "whitening.zarr", p, cpu_backend(), folder / "preprocessed.zarr"
    )
    return folder


@pytest.fixture(scope="module")
def zigzag(tmp_path_factory):
    return preprocessed_recording(tmp_path_factory.mktemp("zigzag"), "drift", drift_period_s=8.0)


@pytest.fixture(scope="module")
def randomwalk(tmp_path_factory):
    return preprocessed_recording(
        tmp_path_factory.mktemp("walk"), "drift_randomwalk", drift_timescale_s=1.5
    )


@pytest.fixture(scope="module")
def nonrigid(tmp_path_factory):
    return preprocessed_recording(
        tmp_path_factory.mktemp("nonrigid"), "drift_nonrigid", drift_period_s=8.0
    )


def unwhiten_of(folder):
    g = open_store(folder / "whitening.zarr")
    return unwhitening_matrix(g["whitening"][...], g["covariance"][...])


def estimate(folder, nblocks=1, be=None):
    reader = PreprocessedReader(folder / "preprocessed.zarr")
    p = resolve({"nblocks": nblocks})
    return estimate_drift(reader, p, be or cpu_backend(), unwhiten_of(folder))


def truth_of(folder, est, shank=0):
    gt = load_ground_truth(folder / "rec_gt.npz")
    return true_displacement_per_batch(gt, est.NT, est.n_samples, est.sample_rate, est.yblk[shank])


# --------------------------------------------------------------------------------------------
# accuracy


@backends_agree(atol={"depth": 1e-2, "dshift": 0.5})
def test_rigid_zigzag_is_recovered(be, zigzag):
    """Detection finds the same spikes on both backends; registration the same shifts to well
    under a micrometre."""
    est = estimate(zigzag, nblocks=1, be=be)
    truth = truth_of(zigzag, est)
    assert est.enabled and est.dshift.shape == (1, 32, 1)
    assert rms_error_um(est.dshift[0], truth) < RMS_BOUND_UM
    # the sign: positive = units at larger y, as in the ground truth
    assert np.corrcoef(est.dshift[0, :, 0], truth[:, 0])[0, 1] > 0.95
    return {
        "time": est.spikes["time"],
        "channel": est.spikes["channel"],
        "depth": est.spikes["depth"],
        "dshift": est.dshift,
    }


@pytest.fixture(scope="module")
def zigzag_drift(zigzag, tmp_path_factory):
    """drift.zarr of the zigzag recording, estimated on the CPU."""
    path = tmp_path_factory.mktemp("zigzag_drift") / "drift.zarr"
    write_drift_store(path, estimate(zigzag, be=cpu_backend()), resolve({"nblocks": 1}), "cpu")
    return path


@backends_agree(atol=1e-4)
def test_corrected_reads_agree(be, zigzag, zigzag_drift):
    """Drift-corrected windows (kriging interpolation) on either backend; read straight into
    device arrays they equal the host reads of the same reader."""
    reader = DriftCorrectedReader(zigzag / "preprocessed.zarr", zigzag_drift, be)
    on_host = reader.read(NT - 500, NT + 500)
    np.testing.assert_array_equal(be.to_host(reader.read_device(be, NT - 500, NT + 500)), on_host)
    return on_host


def test_random_walk_is_recovered(randomwalk):
    est = estimate(randomwalk, nblocks=1)
    truth = truth_of(randomwalk, est)
    assert rms_error_um(est.dshift[0], truth) < RMS_BOUND_UM
    assert np.corrcoef(est.dshift[0, :, 0], truth[:, 0])[0, 1] > 0.95


def test_nonrigid_top_moves_more_than_bottom(nonrigid):
    est = estimate(nonrigid, nblocks=3)
    truth = truth_of(nonrigid, est)  # the top moves 2.8 times as much as the bottom
    assert est.dshift.shape == (1, 32, 5)
    assert np.all(np.diff(est.yblk[0]) > 0)
    assert est.dshift[0, :, -1].std() > 1.4 * est.dshift[0, :, 0].std()
    error = rms_error_um(est.dshift[0], truth)
    assert error < RMS_BOUND_UM
    # a rigid estimate cannot follow the depth dependence as well
    rigid = np.repeat(estimate(nonrigid, nblocks=1).dshift[0], 5, axis=1)
    assert error < rms_error_um(rigid, truth)


@backends_agree(atol=0.5)  # µm: the bound of the whole estimate's comparison
def test_batches_without_spikes_get_interpolated_shifts(be, zigzag):
    est = estimate(zigzag)
    sp = est.spikes
    keep = (sp["batch"] < 10) | (sp["batch"] > 12)  # batches 10-12 lose their spikes
    reader = PreprocessedReader(zigzag / "preprocessed.zarr")
    dshift, yblk, counts = register_shank(
        sp["depth"][keep],
        sp["amplitude"][keep],
        sp["batch"][keep],
        32,
        reader.probe.yc,
        8.0,
        1,
        be,
    )
    assert list(counts[10:13]) == [0, 0, 0]
    expected = np.interp([10, 11, 12], [9, 13], dshift[[9, 13], 0])
    np.testing.assert_allclose(dshift[10:13, 0], expected)
    assert rms_error_um(dshift, truth_of(zigzag, est)) < RMS_BOUND_UM
    return dshift, counts


def test_estimate_is_deterministic(randomwalk):
    a, b = estimate(randomwalk), estimate(randomwalk)
    np.testing.assert_array_equal(a.dshift, b.dshift)
    np.testing.assert_array_equal(a.spikes["depth"], b.spikes["depth"])


def drift_stages(zigzag, folder, p):
    """The drift and drift_plot stages on the zigzag recording, into ``folder``."""
    run_drift(zigzag / "preprocessed.zarr", zigzag / "whitening.zarr", folder / "drift.zarr", p)
    run_drift_plot(folder / "drift.zarr", folder / "drift.png")


def test_corrected_data_show_no_drift(zigzag, tmp_path):
    p = resolve({"nblocks": 1, "device": "cpu"})
    drift_stages(zigzag, tmp_path, p)
    before = read_drift_store(tmp_path / "drift.zarr")
    reader = DriftCorrectedReader(zigzag / "preprocessed.zarr", tmp_path / "drift.zarr")
    assert reader.enabled
    np.testing.assert_array_equal(
        reader.read_device(cpu_backend(), NT - 300, 2 * NT + 300),
        reader.read(NT - 300, 2 * NT + 300),
    )
    after = estimate_drift(reader, p, cpu_backend(), unwhiten_of(zigzag))
    assert np.ptp(after.dshift) < 0.35 * np.ptp(before.dshift)
    # the raster's corrected depths (depth minus displacement) do not drift either
    sp = before.spikes
    depth = corrected_depths(sp["depth"], sp["batch"], sp["shank"], before)
    again = register_shank(
        depth, sp["amplitude"], sp["batch"], 32, reader.probe.yc, 8.0, 1, cpu_backend()
    )[0]
    assert np.ptp(again) < 0.35 * np.ptp(before.dshift)


# --------------------------------------------------------------------------------------------
# the stage's outputs


def test_store_and_plot(zigzag, tmp_path):
    p = resolve({"nblocks": 2, "device": "cpu"})
    drift_stages(zigzag, tmp_path, p)
    g = open_store(tmp_path / "drift.zarr")
    assert g.attrs["enabled"] is True and g.attrs["stage"] == "drift"
    assert g.attrs["NT"] == NT and g.attrs["localisation"] == "filtered"
    assert g["dshift"].shape == (1, 32, 3) and g["yblk"].shape == (1, 3)
    assert g["spikes/time"].shape == g["spikes/depth"].shape == g["spikes/amplitude"].shape
    assert np.all(np.diff(g["spikes/time"][...]) >= 0)
    assert_picture(tmp_path / "drift.png", drift_size(n_shanks=1))


def test_nblocks_zero_is_identity(zigzag, tmp_path):
    p = resolve({"nblocks": 0, "device": "cpu"})
    drift_stages(zigzag, tmp_path, p)
    g = open_store(tmp_path / "drift.zarr")
    assert g.attrs["enabled"] is False and "nblocks = 0" in g.attrs["reason"]
    assert not g["dshift"][...].any()
    plain = PreprocessedReader(zigzag / "preprocessed.zarr")
    corrected = DriftCorrectedReader(zigzag / "preprocessed.zarr", tmp_path / "drift.zarr")
    for start, stop in [(-100, 500), (NT - 70, NT + 70), (plain.n_samples - 10, plain.n_samples)]:
        np.testing.assert_array_equal(corrected.read(start, stop), plain.read(start, stop))
        np.testing.assert_array_equal(
            corrected.read_int16(start, stop), plain.read_int16(start, stop)
        )
    assert_picture(tmp_path / "drift.png", drift_size(n_shanks=1))  # the spikes, uncorrected


# --------------------------------------------------------------------------------------------
# when registration is meaningless


def grid_probe(xs, ys):
    x, y = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float))
    n = x.size
    return Probe(np.arange(n), x.ravel(), y.ravel(), np.zeros(n))


@pytest.mark.parametrize(
    "probe, words",
    [
        (grid_probe([0, 20], [0, 20]), "vertical extent"),  # tetrode
        (grid_probe(np.arange(16) * 20, [100]), "vertical extent"),  # single row
        (neuropixels_like(16), "vertical extent"),  # 140 µm tall
        (grid_probe([0], np.arange(32) * 50.0), "rows per 100 um"),  # sparse linear probe
    ],
)
def test_unsuitable_probes_are_refused(probe, words):
    ok, reason = registration_check(probe, nblocks=5)
    assert not ok and words in reason


def test_neuropixels_like_probe_is_accepted():
    assert registration_check(neuropixels_like(384), 5) == (True, "")
    assert registration_check(neuropixels_like(64, 2), 1) == (True, "")
    assert not registration_check(neuropixels_like(384), 0)[0]


def write_toy_preprocessed(path, traces, probe, nt=NT, scaleproc=200.0):
    """A ``preprocessed.zarr`` holding ``traces`` (whitened units)."""
    data = np.clip(np.rint(traces * scaleproc), -32768, 32767).astype(np.int16)
    attrs = {"scaleproc": scaleproc, "NT": nt, "sample_rate": FS, "n_samples": data.shape[0]}
    with writing_store(path, "preprocess", {}, "cpu", 0, attrs) as g:
        create_traces(g, *data.shape, nt)[...] = data
        write_probe_arrays(g, probe)
    return path


def test_short_probe_switches_itself_off(tmp_path):
    probe = neuropixels_like(16)
    noise = np.random.default_rng(0).normal(size=(3 * 4096, 16)).astype(np.float32)
    pre = write_toy_preprocessed(tmp_path / "pre.zarr", noise, probe, nt=4096)
    p = resolve({"nblocks": 5, "device": "cpu"})
    run_drift(pre, None, tmp_path / "drift.zarr", p)
    g = open_store(tmp_path / "drift.zarr")
    assert g.attrs["enabled"] is False and "vertical extent 140 um" in g.attrs["reason"]
    assert g["dshift"].shape == (1, 3, 1) and not g["dshift"][...].any()
    reader = DriftCorrectedReader(pre, tmp_path / "drift.zarr")
    np.testing.assert_array_equal(reader.read(0, 5000), PreprocessedReader(pre).read(0, 5000))


def test_recording_without_spikes_switches_itself_off(tmp_path):
    probe = neuropixels_like(64)
    noise = np.random.default_rng(1).normal(size=(3 * 4096, 64)).astype(np.float32)
    pre = write_toy_preprocessed(tmp_path / "pre.zarr", noise, probe, nt=4096)
    est = estimate_drift(PreprocessedReader(pre), resolve({}), cpu_backend())
    assert not est.enabled and "spikes above spkTh_drift" in est.reason
    assert est.dshift.shape == (1, 3, 1)


# --------------------------------------------------------------------------------------------
# the correction


def gaussian_spike(n_samples, probe, t0, channel, amplitude=20.0, sigma_um=15.0):
    """Whitened traces with one spike: a 5-sample trough with a Gaussian footprint."""
    x = np.zeros((n_samples, probe.n_channels), np.float32)
    d2 = (probe.xc - probe.xc[channel]) ** 2 + (probe.yc - probe.yc[channel]) ** 2
    footprint = amplitude * np.exp(-d2 / (2 * sigma_um**2))
    shape = np.array([0.3, 0.7, 1.0, 0.7, 0.3])
    x[t0 - 2 : t0 + 3] -= shape[:, None] * footprint[None, :]
    return x


def write_drift(path, probe, n_samples, nt, dshift_per_batch, enabled=True):
    """A drift store with one block per shank and the given displacement per batch."""
    nb = int(np.ceil(n_samples / nt))
    dshift = np.asarray(dshift_per_batch, float).reshape(1, nb, 1)
    est = DriftEstimate(
        enabled,
        "",
        nt,
        n_samples,
        FS,
        np.array([0.0]),
        dshift,
        np.array([[probe.yc.mean()]]),
        empty_spikes(),
        np.zeros((1, nb), np.int64),
    )
    write_drift_store(path, est, resolve({"nblocks": 1}), "cpu")
    return path


def peak_channel(x, t):
    return int(np.argmin(x[t]))


def test_reader_moves_a_spike_by_the_displacement(tmp_path):
    probe = neuropixels_like(64)  # rows 20 µm apart; rows 40 µm apart share their x positions
    c0, n, nt = 33, 3000, 1000
    x = gaussian_spike(n, probe, 900, c0) + gaussian_spike(n, probe, 1100, c0)
    pre = write_toy_preprocessed(tmp_path / "pre.zarr", x, probe, nt=nt)
    # batch 1: units 40 µm higher than in the reference, so they are moved 40 µm down
    dr = write_drift(tmp_path / "drift.zarr", probe, n, nt, [0.0, 40.0, 0.0])
    reader = DriftCorrectedReader(pre, dr)
    window = reader.read(800, 1200)
    assert peak_channel(window, 100) == c0  # batch 0: not moved
    moved = peak_channel(window, 300)
    assert moved == c0 - 4
    assert probe.yc[moved] == probe.yc[c0] - 40 and probe.xc[moved] == probe.xc[c0]
    assert window[300].min() == pytest.approx(x[1100].min(), rel=0.1)
    # a window cut at the batch edge gives the same samples
    np.testing.assert_array_equal(
        window, np.concatenate([reader.read(800, 1000), reader.read(1000, 1200)])
    )
    # positive displacement moves towards smaller y, negative towards larger y
    dr2 = write_drift(tmp_path / "drift2.zarr", probe, n, nt, [0.0, -40.0, 0.0])
    assert peak_channel(DriftCorrectedReader(pre, dr2).read(1000, 1200), 100) == c0 + 4
    # a corrected copy holds what the corrected reader gives
    write_corrected_traces(reader, tmp_path / "copy.zarr")
    copy = PreprocessedReader(tmp_path / "copy.zarr")
    assert copy.NT == nt and copy.n_samples == n
    np.testing.assert_array_equal(copy.read_int16(0, n), reader.read_int16(0, n))


def test_zero_displacement_reads_exactly_like_the_plain_reader(tmp_path):
    probe = neuropixels_like(32)
    x = np.random.default_rng(2).normal(size=(2500, 32)).astype(np.float32)
    pre = write_toy_preprocessed(tmp_path / "pre.zarr", x, probe, nt=1000)
    dr = write_drift(tmp_path / "drift.zarr", probe, 2500, 1000, [0.0, 0.0, 0.0])
    reader = DriftCorrectedReader(pre, dr)
    plain = PreprocessedReader(pre)
    np.testing.assert_array_equal(reader.read(-50, 2600), plain.read(-50, 2600))
    # and the kriging matrix of zero displacement is exactly the identity
    m = KrigingInterpolator(probe, 20.0).matrix(np.zeros(32))
    np.testing.assert_array_equal(m, np.eye(32))


def test_reader_refuses_a_store_of_another_recording(tmp_path):
    probe = neuropixels_like(32)
    pre = write_toy_preprocessed(
        tmp_path / "pre.zarr", np.zeros((2500, 32), np.float32), probe, nt=1000
    )
    dr = write_drift(tmp_path / "drift.zarr", probe, 3000, 1000, [0.0, 1.0, 0.0])
    with pytest.raises(KilosnakeError, match="rerun the drift rule"):
        DriftCorrectedReader(pre, dr)


def test_gaussian_kernel_interpolates_a_footprint_better_than_exponential():
    probe = neuropixels_like(64)

    def footprint(y0):
        return np.exp(-((probe.yc - y0) ** 2 + (probe.xc - 35) ** 2) / (2 * 25.0**2))

    f, moved = footprint(330.0), footprint(340.0)
    error = {}
    for kind in KERNELS:
        back = KrigingInterpolator(probe, 20.0, kind).matrix(np.full(64, 10.0)) @ moved
        error[kind] = np.linalg.norm(back - f) / np.linalg.norm(moved - f)
    assert error["exponential"] < 0.7 and error["gaussian"] < 0.3
    assert KRIGING_KERNEL == "gaussian" and error["gaussian"] < error["exponential"]


# --------------------------------------------------------------------------------------------
# multi-shank probes


def test_shanks_are_registered_separately(zigzag, randomwalk, tmp_path):
    a, b = (
        PreprocessedReader(zigzag / "preprocessed.zarr"),
        PreprocessedReader(randomwalk / "preprocessed.zarr"),
    )
    traces = np.concatenate([a.read(0, a.n_samples), b.read(0, b.n_samples)], axis=1)
    pa, pb = a.probe, b.probe
    probe = Probe(
        np.arange(64),
        np.concatenate([pa.xc, pb.xc + 250.0]),
        np.concatenate([pa.yc, pb.yc]),
        np.repeat([0.0, 1.0], 32),
    )
    pre = write_toy_preprocessed(tmp_path / "pre.zarr", traces, probe)
    ua, ub = unwhiten_of(zigzag), unwhiten_of(randomwalk)
    unwhiten = np.block([[ua, np.zeros_like(ua)], [np.zeros_like(ub), ub]])
    est = estimate_drift(PreprocessedReader(pre), resolve({"nblocks": 1}), cpu_backend(), unwhiten)
    assert est.dshift.shape == (2, 32, 1) and list(est.shank_ids) == [0.0, 1.0]
    assert set(np.unique(est.spikes["shank"])) == {0, 1}
    for k, folder in enumerate([zigzag, randomwalk]):
        truth = truth_of(folder, est, k)
        assert rms_error_um(est.dshift[k], truth) < RMS_BOUND_UM
    # the correction never mixes shanks
    m = KrigingInterpolator(probe, 20.0).matrix(np.full(64, 15.0))
    assert not m[:32, 32:].any() and not m[32:, :32].any()
