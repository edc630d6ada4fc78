"""Filtering, common reference and whitening, batch by batch and whole."""

import numpy as np
import pytest
import scipy.signal
from backends import backends_agree

from kilosnake.io.probe import neuropixels_like
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.traces import PreprocessedReader
from kilosnake.params import resolve
from kilosnake.preprocess.filters import (
    butterworth_sos,
    common_median_reference,
    filter_forward_backward,
)
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening, local_whitening_matrix

FS = 30000.0


def sine(freq, n=30000, channels=3):
    t = np.arange(n) / FS
    return np.repeat(np.sin(2 * np.pi * freq * t)[:, None], channels, axis=1)


@backends_agree(rtol=1e-12, atol=1e-14)
def test_each_backend_designs_scipys_butterworth_filter(be):
    for fslow in (None, 3000.0):
        sos = butterworth_sos(300, FS, fslow=fslow, be=be)
        assert isinstance(sos, np.ndarray)
        band = [300 / (FS / 2)] + ([fslow / (FS / 2)] if fslow else [])
        btype = "bandpass" if fslow else "highpass"
        expected = scipy.signal.butter(3, band if fslow else band[0], btype=btype, output="sos")
        np.testing.assert_allclose(sos, expected, rtol=1e-12, atol=1e-14)
    return sos


@backends_agree(rtol=0, atol=1e-6)
def test_filter_matches_scipy_in_float64(be):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4)).cumsum(axis=0)  # strong low frequencies
    sos = butterworth_sos(300, FS)
    expected = scipy.signal.sosfilt(sos, scipy.signal.sosfilt(sos, x, axis=0)[::-1], axis=0)[::-1]
    got = be.to_host(filter_forward_backward(be.asarray(x), sos, be))
    np.testing.assert_allclose(got, expected, atol=1e-8 * np.abs(expected).max())
    return got


@backends_agree(rtol=1e-4, atol=1e-4)
def test_highpass_removes_low_and_keeps_high_frequencies(be):
    sos = butterworth_sos(300, FS)
    middle = slice(5000, 25000)
    low = be.to_host(filter_forward_backward(be.asarray(sine(100), np.float32), sos, be))
    high = be.to_host(filter_forward_backward(be.asarray(sine(2000), np.float32), sos, be))
    assert np.abs(low[middle]).max() < 0.01
    assert np.abs(high[middle]).max() > 0.95
    return low, high


@backends_agree(rtol=1e-4, atol=1e-4)
def test_bandpass_with_fslow(be):
    sos = butterworth_sos(300, FS, fslow=3000)
    y = be.to_host(filter_forward_backward(be.asarray(sine(8000), np.float32), sos, be))
    assert np.abs(y[5000:25000]).max() < 0.05
    return y


@backends_agree(rtol=1e-12, atol=1e-12)
def test_common_median_reference_removes_shared_signal(be):
    rng = np.random.default_rng(2)
    shared = rng.normal(size=(1000, 1)) * 50
    x = rng.normal(size=(1000, 31)) + shared
    y = be.to_host(common_median_reference(be.asarray(x), be))
    assert np.abs(np.median(y, axis=1)).max() < 1e-9
    assert y.std() < 1.5
    return y


def test_local_whitening_whitens_correlated_noise():
    probe = neuropixels_like(64)
    rng = np.random.default_rng(3)
    d = np.hypot(probe.xc[:, None] - probe.xc, probe.yc[:, None] - probe.yc)
    cov = np.exp(-d / 40.0) * 4.0 + np.eye(64)
    x = rng.multivariate_normal(np.zeros(64), cov, size=200000)
    w = local_whitening_matrix(np.cov(x.T), probe.xc, probe.yc, whitening_range=32)
    white = x @ w
    c = np.cov(white.T)
    np.testing.assert_allclose(np.diag(c), 1.0, atol=0.03)
    near = d < 40
    assert np.abs((c - np.eye(64))[near]).max() < 0.1


def write_wavy_recording(path, n_samples, n_channels, seed=0):
    """Noise + a slow common wave + DC offsets + a few spikes: what a high-pass must handle."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / FS
    x = rng.normal(0, 10, (n_samples, n_channels))
    x += 200 * np.sin(2 * np.pi * 3 * t)[:, None] + rng.normal(0, 300, n_channels)
    spike_times = rng.integers(100, n_samples - 100, 200)
    x[spike_times, rng.integers(0, n_channels, 200)] -= 150
    x.astype(np.int16).tofile(path)


@pytest.fixture(scope="module")
def wavy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavy")
    n, nch = 40000, 32
    write_wavy_recording(folder / "rec.bin", n, nch)
    info = RecordingInfo(str(folder / "rec.bin"), nch, "int16", FS)
    probe = neuropixels_like(nch)
    p = resolve({"NT": 8192, "nSkipCov": 1})
    from kilosnake.runtime.backend import cpu_backend

    compute_whitening(info, probe, p, cpu_backend(), folder / "whitening.zarr")
    return folder, info, p


def test_batches_equal_the_whole_recording(be, wavy):
    folder, info, p = wavy
    preprocess_recording(info, folder / "whitening.zarr", p, be, folder / f"b_{be.name}.zarr")
    whole = dict(p, NT=info_len(info))
    preprocess_recording(info, folder / "whitening.zarr", whole, be, folder / f"w_{be.name}.zarr")
    batched = PreprocessedReader(folder / f"b_{be.name}.zarr").read_int16(0, info_len(info))
    at_once = PreprocessedReader(folder / f"w_{be.name}.zarr").read_int16(0, info_len(info))
    diff = np.abs(batched.astype(int) - at_once.astype(int))
    assert diff.max() <= 1  # int16 rounding of float32 arithmetic
    assert (diff > 0).mean() < 0.01
    edges = np.arange(8192, info_len(info), 8192)
    assert diff[np.concatenate([edges - 1, edges])].max() <= 1  # no steps at batch edges


def info_len(info):
    import os

    return os.path.getsize(info.path) // (2 * info.n_channels_total)


def test_preprocessed_noise_has_unit_variance(wavy):
    folder, info, p = wavy
    from kilosnake.runtime.backend import cpu_backend

    preprocess_recording(info, folder / "whitening.zarr", p, cpu_backend(), folder / "p.zarr")
    r = PreprocessedReader(folder / "p.zarr")
    x = r.read(2000, r.n_samples - 2000)
    assert r.traces.chunks == (4096, 32) and r.traces.dtype == np.int16  # NT = 8192, 2 chunks
    # median absolute deviation is robust to the injected spikes
    sd = np.median(np.abs(x), axis=0) / 0.6745
    np.testing.assert_allclose(sd, 1.0, atol=0.1)
    assert np.abs(np.median(x, axis=0)).max() < 0.05
    outside = r.read(-10, 0)
    assert outside.shape == (10, 32) and not outside.any()


@pytest.mark.parametrize(
    "NT, expected", [(65600, 8200), (65472, 8184), (8192, 4096), (4096, 4096), (30001, 30001)]
)
def test_trace_chunks_divide_the_batch(NT, expected):
    from kilosnake.io.traces import trace_chunks

    chunk, channels = trace_chunks(NT, 384)
    assert (chunk, channels) == (expected, 384) and NT % chunk == 0


def test_device_reads_equal_host_reads(wavy, be):
    folder, info, p = wavy
    from kilosnake.runtime.backend import cpu_backend

    preprocess_recording(info, folder / "whitening.zarr", p, cpu_backend(), folder / "p.zarr")
    r = PreprocessedReader(folder / "p.zarr")
    for start, stop in [(-100, 5000), (3000, 9000), (r.n_samples - 50, r.n_samples + 70)]:
        np.testing.assert_array_equal(
            be.to_host(r.read_device(be, start, stop)), r.read(start, stop)
        )


def test_reads_into_a_used_buffer_equal_fresh_reads(wavy):
    folder, info, p = wavy
    from kilosnake.runtime.backend import cpu_backend

    preprocess_recording(info, folder / "whitening.zarr", p, cpu_backend(), folder / "p.zarr")
    r = PreprocessedReader(folder / "p.zarr")
    for start, stop in [
        (-100, 5000),
        (3000, 9000),
        (r.n_samples - 50, r.n_samples + 70),
        (r.n_samples + 5, r.n_samples + 30),
    ]:
        dirty = np.full((stop - start, r.n_channels), 7, dtype=np.int16)
        np.testing.assert_array_equal(
            r.read_int16(start, stop, out=dirty), r.read_int16(start, stop)
        )


@pytest.mark.parametrize("n_channels", [1, 2, 7, 32, 385])
def test_the_median_across_channels_is_numpys_bit_for_bit(n_channels):
    from kilosnake.preprocess.filters import median_across_channels
    from kilosnake.runtime.backend import cpu_backend

    rng = np.random.default_rng(n_channels)
    x = rng.normal(0, 50, (3000, n_channels)).astype(np.float32)
    x[::7] = np.round(x[::7])  # ties
    got = median_across_channels(x, cpu_backend())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.median(x, axis=1))


@pytest.mark.gpu
@pytest.mark.parametrize("n_samples", [10, 5003])
@pytest.mark.parametrize("n_channels", [1, 7, 32, 385])
@pytest.mark.parametrize("car", [True, False])
@pytest.mark.parametrize("fslow", [None, 6000.0])
def test_the_gpu_kernels_filter_a_batch_as_the_cpu_does_bit_for_bit(
    n_samples, n_channels, car, fslow
):
    from backends import gpu_backend_or_skip

    from kilosnake.preprocess.filters import batch_constants, filter_batch
    from kilosnake.runtime.backend import cpu_backend

    gpu = gpu_backend_or_skip("the preprocessing kernels")
    rng = np.random.default_rng(n_channels + n_samples)
    raw = rng.normal(0, 40, (n_samples, n_channels)).astype(np.int16)
    raw[::5, : max(1, n_channels // 2)] = 3  # ties in the medians
    offsets = rng.normal(0, 5, n_channels).astype(np.float32)
    sos = butterworth_sos(300.0, FS, fslow)
    expected = filter_batch(raw, offsets, sos, car, cpu_backend())
    assert gpu.use_kernels
    got = filter_batch(gpu.asarray(raw), *batch_constants(offsets, sos, gpu), car, gpu)
    np.testing.assert_array_equal(got.get(), expected)
    # and the array code the kernels replace agrees within float32 rounding
    array_code = filter_batch(gpu.asarray(raw), offsets, sos, car, gpu.array_code())
    np.testing.assert_allclose(array_code.get(), expected, rtol=1e-3, atol=0.1)


@pytest.mark.gpu
def test_the_gpu_rounding_to_int16_is_numpys():
    from backends import gpu_backend_or_skip

    from kilosnake.preprocess.traces import whitened_int16
    from kilosnake.runtime.backend import cpu_backend

    gpu = gpu_backend_or_skip("the rounding kernel")
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (4001, 6)).astype(np.float32)
    x[:10] = np.array([0.5, 1.5, -0.5, -2.5, 4e4, -4e4], np.float32) / 200.0  # ties, clips
    w = np.eye(6, dtype=np.float32)
    expected = whitened_int16(x, w, 200.0, cpu_backend())
    got = whitened_int16(gpu.asarray(x), w, 200.0, gpu)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got.get(), expected)
