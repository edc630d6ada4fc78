"""Isolated peaks, universal waveforms, neighbourhoods and alignment kernels."""

import numpy as np
import pytest
from backends import backends_agree

from kilosnake.sorting import toy, waveforms

NT0, NT0MIN = 61, 20


@backends_agree()
def test_isolated_peaks_finds_lone_spikes_and_drops_crowded_ones(be):
    rng = np.random.default_rng(0)
    X = (0.3 * rng.standard_normal((2000, 12))).astype(np.float32)
    shape = toy.temporal_shape(NT0, NT0MIN)
    lone = [(300, 2), (800, 9), (1500, 5)]
    crowded = [(1100, 3), (1110, 5)]  # within long_range of each other
    for t, c in lone + crowded:
        X[t - NT0MIN : t - NT0MIN + NT0, c] += 10 * shape
    t, c = waveforms.isolated_peaks(be, be.asarray(X), -6.0, (5, 4), (30, 6), edge=NT0)
    found = sorted(zip(be.to_host(t).tolist(), be.to_host(c).tolist()))
    assert found == sorted(lone)
    return t, c


def test_isolated_peaks_ignore_batch_edges(be):
    X = np.zeros((500, 4), np.float32)
    X[10, 1] = -20  # closer than edge to the start
    X[250, 2] = -20
    t, c = waveforms.isolated_peaks(be, be.asarray(X), -6.0, (5, 4), (30, 6), edge=NT0)
    assert be.to_host(t).tolist() == [250] and be.to_host(c).tolist() == [2]


def _jittered_snippets(n=600, seed=1):
    rng = np.random.default_rng(seed)
    widths = rng.uniform(1.8, 3.2, n)
    snips = np.stack([toy.temporal_shape(NT0, NT0MIN, w) for w in widths])
    snips *= rng.uniform(6, 20, (n, 1))
    return (snips + 0.3 * rng.standard_normal(snips.shape)).astype(np.float32)


def test_universal_waveform_shapes_and_signs(be):
    snips = be.asarray(_jittered_snippets())
    wTEMP = be.to_host(waveforms.scaled_kmeans_prototypes(be, snips, 6, nt0min=NT0MIN))
    wPCA = be.to_host(waveforms.pca_basis(be, snips, 6, NT0MIN))
    assert wTEMP.shape == (NT0, 6) and wPCA.shape == (NT0, 6)
    np.testing.assert_allclose(np.linalg.norm(wTEMP, axis=0), 1, atol=1e-5)
    assert (wTEMP[NT0MIN] < 0).all()
    np.testing.assert_allclose(wPCA.T @ wPCA, np.eye(6), atol=1e-5)
    assert wPCA[NT0MIN, 0] < 0
    mean_shape = toy.temporal_shape(NT0, NT0MIN)
    assert abs(wPCA[:, 0] @ mean_shape) / np.linalg.norm(mean_shape) > 0.95


def test_closest_channels_start_with_the_channel_itself():
    probe = toy.linear_probe(10)
    iC, mask, C2C = waveforms.closest_channels(probe.xc, probe.yc, 32, 30.0)
    assert iC.shape == (10, 10) and mask.shape == (10, 10) and C2C.shape == (10, 10)
    np.testing.assert_array_equal(iC[0], np.arange(10))
    d = np.take_along_axis(C2C, iC, axis=0)
    assert (np.diff(d, axis=0) >= 0).all()
    np.testing.assert_allclose((mask**2).sum(0), 1, atol=2e-3)  # normalised by sqrt(1e-3 + Σ)


@pytest.mark.parametrize("phase", [0, 3, 5, 8])
def test_kriging_kernels_resample_a_smooth_waveform(phase):
    nup = 10
    Ka, Kb = waveforms.kriging_kernels(NT0, NT0MIN, nup, 1.0)
    t = np.arange(NT0, dtype=float)
    centre = 30.0

    def smooth(x):
        return np.exp(-((x - centre) ** 2) / (2 * 4.0**2))

    w = smooth(t)
    shifted = Kb[:, :, phase] @ w
    expected = smooth(t - 0.5 + phase / nup)
    np.testing.assert_allclose(shifted[10:50], expected[10:50], atol=0.02)
    np.testing.assert_allclose(Ka @ w, smooth(NT0MIN - 0.5 + np.arange(nup) / nup), atol=0.02)


@backends_agree(rtol=0)
def test_summed_scores_match_a_direct_loop_and_the_kernel(be):
    """The summed filter-bank score (new-template detection): the array code equals a plain
    loop over channels and partial sums; on the GPU the CUDA kernel equals the array code bit
    for bit."""
    from kilosnake.sorting import detect, kernels

    rng = np.random.default_rng(3)
    n_proto, n_chan, L, n_sum = 3, 6, 50, 4
    F = rng.normal(size=(n_proto, n_chan, L)).astype(np.float32)
    iC = np.stack([np.roll(np.arange(n_chan), -j) for j in range(n_sum)])  # (n_sum, Nchan)
    score, channel = (
        be.to_host(a) for a in detect.summed_scores_by_arrays(be, be.asarray(F), be.asarray(iC))
    )
    expected = np.zeros((n_chan, L), dtype=np.float32)
    for c in range(n_chan):
        running = np.zeros((n_proto, L), dtype=np.float32)
        for j in range(n_sum):
            running += F[:, iC[j, c], :]
            top = np.maximum(running.max(axis=0), 0)
            expected[c] = np.maximum(expected[c], top * top * np.float32(1.0 / (j + 1)))
    np.testing.assert_array_equal(score, expected.max(axis=0))
    np.testing.assert_array_equal(channel, expected.argmax(axis=0))
    if be.use_kernels:
        k_score, k_channel = kernels.best_summed_scores(be.asarray(F), be.asarray(iC))
        np.testing.assert_array_equal(be.to_host(k_score), score)
        np.testing.assert_array_equal(be.to_host(k_channel), channel)
    return score, channel
