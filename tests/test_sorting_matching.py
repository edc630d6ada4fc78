"""Matching pursuit: injected templates are found at the right times and amplitudes."""

import numpy as np
import pytest
from backends import backends_agree, gpu_backend_or_skip

from kilosnake.sorting import matching, svd, toy, waveforms

NT0, NT0MIN = 61, 20


def _templates(be, rec):
    iC, _, _ = waveforms.closest_channels(rec.probe.xc, rec.probe.yc, 32, 30.0)
    Ka, Kb = waveforms.kriging_kernels(NT0, NT0MIN, 10, 1.0)
    lr = svd.factorise_templates(be, be.asarray(rec.waveforms), iC, Ka, Kb, NT0MIN)
    return matching.make_template_set(be, lr.W, lr.U, lr.mu)


@backends_agree(rtol=1e-4, atol=1e-4)
def test_peel_finds_injected_spikes(be):
    rec = toy.make_toy_recording(n_channels=16, duration_s=1.0, n_units=4, rate_hz=25, seed=2)
    tset = _templates(be, rec)
    result = matching.peel(be, be.asarray(rec.traces), tset, 6.0, 10.0)
    times = be.to_host(result.onset) + NT0MIN
    ids = be.to_host(result.template)
    amps = be.to_host(result.amplitude)
    mu = be.to_host(tset.mu)
    assert result.n_spikes == rec.spike_times.size
    matched, close = 0, 0
    for t, u, s in zip(rec.spike_times, rec.spike_units, rec.spike_amplitudes):
        hit = np.flatnonzero((np.abs(times - t) <= 1) & (ids == u))
        if hit.size == 1:
            matched += 1
            # least-squares amplitude of the unit-norm template = scale x template norm
            close += abs(amps[hit[0]] - s * mu[u]) < 0.1 * mu[u]
    assert matched == rec.spike_times.size
    assert close >= 0.95 * matched  # the rest overlap another spike
    # the residual is noise again
    assert abs(float(be.to_host(result.residual).std()) - 1.0) < 0.05
    return times, ids, amps


@backends_agree()
def test_peel_separates_overlapping_spikes(be):
    rec = toy.make_toy_recording(
        n_channels=16, duration_s=0.1, n_units=2, rate_hz=0, seed=4, noise=0.5
    )
    X = rec.traces.copy()
    toy.add_spikes(X, rec.waveforms, [1000, 1012], [0, 1], [1.0, 1.0], NT0MIN)
    tset = _templates(be, rec)
    result = matching.peel(be, be.asarray(X), tset, 6.0, 10.0)
    found = sorted(
        zip((be.to_host(result.onset) + NT0MIN).tolist(), be.to_host(result.template).tolist())
    )
    assert found == [(1000, 0), (1012, 1)]
    return np.array(found)


def test_peel_without_templates_or_spikes_returns_nothing(be):
    rec = toy.make_toy_recording(n_channels=8, duration_s=0.2, n_units=2, rate_hz=0, seed=5)
    tset = _templates(be, rec)
    assert matching.peel(be, be.asarray(rec.traces), tset, 6.0, 10.0).n_spikes == 0


@backends_agree(rtol=1e-12, atol=1e-12)
def test_segment_sum_matches_a_loop(be):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((50, 3, 2))
    labels = rng.integers(0, 6, 50)
    labels[labels == 4] = 5  # one empty label
    sums, counts = matching.segment_sum(be, be.asarray(values), be.asarray(labels), 6)
    for k in range(6):
        np.testing.assert_allclose(be.to_host(sums)[k], values[labels == k].sum(0), atol=1e-12)
        assert int(be.to_host(counts)[k]) == (labels == k).sum()
    return sums, counts


@backends_agree(rtol=0)
def test_best_prior_scores_equal_the_formula(be):
    """Largest prior score per row and its template (the first on ties), as NumPy computes
    the formula; on the GPU this is a CUDA kernel and must agree bit for bit."""
    from kilosnake.sorting import matching

    rng = np.random.default_rng(5)
    C = rng.normal(size=(300, 37)).astype(np.float32) * 5
    C[7, [3, 9]] = 20.0  # a tie: the first template wins
    mu = rng.uniform(5, 20, size=37).astype(np.float32)
    mu[9] = mu[3] = mu.max()
    lam = 10.0
    lm = np.float32(lam) * mu
    cf = (np.maximum(C, 0) + lm) * (np.maximum(C, 0) + lm) / np.float32(1 + lam) - lm * mu
    best, best_id = matching.best_scores(be, be.asarray(C), be.asarray(mu), lam)
    np.testing.assert_array_equal(be.to_host(best), cf.max(axis=1))
    np.testing.assert_array_equal(be.to_host(best_id), cf.argmax(axis=1))
    assert cf[7, 3] == cf[7, 9] == cf[7].max() and int(be.to_host(best_id)[7]) == 3
    return best, best_id


@backends_agree()
def test_local_maxima_match_a_direct_loop(be):
    """Onsets above threshold that are the largest within ±half, the first of equal maxima
    (CUDA kernels on the GPU)."""
    rng = np.random.default_rng(6)
    best = rng.normal(size=400).astype(np.float32)
    best[100] = best[104] = 9.0  # equal maxima closer than half: only the first
    best[200], best[260] = 8.0, 8.5  # far apart: both
    half = 5
    expected = []
    for t in range(best.size):
        window = best[max(0, t - half) : t + half + 1]
        if (
            best[t] > 1.0
            and best[t] >= window.max()
            and not (expected and t - expected[-1] <= half)
        ):
            expected.append(t)
    got = be.to_host(matching.local_maxima(be, be.asarray(best), 1.0, half))
    np.testing.assert_array_equal(got, expected)
    assert 100 in got and 104 not in got and 200 in got and 260 in got
    return got


def test_only_a_gpu_backend_has_kernels(be):
    """The CPU path is the array code; a GPU backend runs the CUDA kernels unless switched off."""
    assert be.use_kernels == (be.name == "gpu")
    off = be.array_code()
    assert not off.use_kernels and off.xp is be.xp and off.name == be.name


@pytest.mark.gpu
def test_peeling_kernels_equal_the_array_code():
    """Peeling with the CUDA kernels gives the same spikes, residual and projections, bit for
    bit, as the array code on the same GPU (``be.array_code()``). The kernels exist only on a
    GPU: without one this is skipped."""
    be = gpu_backend_or_skip("comparing the CUDA kernels with the array code")
    assert be.use_kernels
    rec = toy.make_toy_recording(n_channels=16, duration_s=0.5, n_units=4, rate_hz=40, seed=7)
    tset = _templates(be, rec)
    a = matching.peel(be, be.asarray(rec.traces), tset, 6.0, 10.0)
    b = matching.peel(be.array_code(), be.asarray(rec.traces), tset, 6.0, 10.0)
    assert a.n_spikes > 10
    for name in ("onset", "template", "amplitude", "score", "residual", "projections"):
        np.testing.assert_array_equal(
            be.to_host(getattr(a, name)), be.to_host(getattr(b, name)), err_msg=name
        )


@backends_agree(rtol=1e-11, atol=1e-11)
def test_residual_sums_per_template_equal_a_loop(be):
    """Per-template sums of the spikes' residual windows (learning's running averages): the
    CPU chunks and the GPU kernel both equal a plain loop (to float64 rounding)."""
    from kilosnake.sorting import learn

    rng = np.random.default_rng(8)
    nt0, n_chan, n_filt = 5, 7, 4
    residual = rng.normal(size=(300, n_chan)).astype(np.float32)
    onset = np.sort(rng.choice(290, size=40, replace=False)).astype(np.int64)
    template = rng.integers(0, n_filt - 1, size=40).astype(np.int64)  # the last one: none
    result = matching.PeelResult(
        be.asarray(onset),
        be.asarray(template),
        be.asarray(np.ones(40, np.float32)),
        be.asarray(np.ones(40, np.float32)),
        be.asarray(residual),
        None,
    )
    order = be.xp.lexsort(be.xp.stack([result.onset, result.template]))
    sums, counts = learn.residual_sums(be, result, order, n_filt, nt0)
    expected = np.zeros((n_filt, nt0, n_chan))
    for o, t in zip(onset, template):
        expected[t] += residual[o : o + nt0]
    np.testing.assert_allclose(be.to_host(sums), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(be.to_host(counts), np.bincount(template, minlength=n_filt))
    return sums, counts
