"""Refractoriness statistics (Q, R) of correlograms."""

import numpy as np
import pytest
from curation_fixtures import FS, poisson_train, refractory_train

from kilosnake.curation import ccg
from kilosnake.curation.ccg import (
    UNDETERMINED,
    correlogram,
    refractory_stats,
    refractory_stats_many,
)


def naive_correlogram(t1, t2, tbin, nbins=500):
    d = (np.asarray(t2, float)[None, :] - np.asarray(t1, float)[:, None]).ravel() / tbin
    k = np.floor(d + 0.5).astype(np.int64)
    k = k[np.abs(k) <= nbins]
    return np.bincount(k + nbins, minlength=2 * nbins + 1)


def test_correlogram_matches_pairwise_histogram():
    rng = np.random.default_rng(0)
    a, b = poisson_train(rng, 30, 20), poisson_train(rng, 20, 20)
    np.testing.assert_array_equal(correlogram(a, b, FS), naive_correlogram(a, b, FS / 1000))
    np.testing.assert_array_equal(correlogram(a, a, FS), naive_correlogram(a, a, FS / 1000))


def test_refractory_train_has_a_dip_and_poisson_train_has_none():
    rng = np.random.default_rng(1)
    refr = refractory_train(rng, 20, 200)
    pois = poisson_train(rng, 20, 200)
    q_r, r_r = refractory_stats(refr, refr, FS)
    q_p, _ = refractory_stats(pois, pois, FS)
    assert q_r < 0.05 and r_r < 0.05
    assert 0.7 < q_p < 1.3


def test_halves_of_one_neuron_are_cross_refractory_but_two_neurons_are_not():
    rng = np.random.default_rng(2)
    a = refractory_train(rng, 20, 200)
    half = rng.random(a.size) < 0.5
    b = refractory_train(rng, 20, 200)
    assert refractory_stats(a[half], a[~half], FS).Q < 0.05
    assert refractory_stats(a, b, FS).Q > 0.5


@pytest.mark.parametrize("t1,t2", [([], []), ([1000], [1000]), ([], [5, 6]), ([7, 7], [7])])
def test_degenerate_trains_are_undetermined(t1, t2):
    assert refractory_stats(np.array(t1), np.array(t2), FS) == UNDETERMINED


def test_many_pairs_agree_with_single_calls():
    rng = np.random.default_rng(3)
    trains = [refractory_train(rng, 15, 60), poisson_train(rng, 15, 60), np.array([], int)]
    pairs = np.array([[0, 0], [0, 1], [1, 1], [2, 0]])
    q, r = refractory_stats_many(trains, pairs, FS)
    for k, (i, j) in enumerate(pairs):
        assert (q[k], r[k]) == tuple(refractory_stats(trains[i], trains[j], FS))


def pair_counts_over_all_pairs(t1, t2, lags):
    """#{(i, j): t2[j] < t1[i] + lag} for every lag, from every pair."""
    t1 = np.asarray(t1, float).ravel()[:, None]
    t2 = np.asarray(t2, float)[None, :]
    return np.array(
        [np.count_nonzero(t2 < t1 + lag) for lag in np.ravel(lags)], dtype=np.int64
    ).reshape(np.shape(lags))


def correlogram_lags(tbin):
    edges = np.unique(
        np.concatenate(
            [np.ravel(r) for r in (ccg.FAR_SHOULDERS, ccg.NEAR_BEFORE, ccg.NEAR_AFTER, (0, 1))]
            + [np.arange(-10, 12)]
        )
    )
    return (edges - 0.5) * tbin


#: module settings forcing each way of counting
STRATEGIES = {
    "one search": {"DIRECT_KEYS": 1 << 40},
    "anchors": {"DIRECT_KEYS": 0},
    "anchors, small blocks": {"DIRECT_KEYS": 0, "CHUNK": 97, "PAIR_BLOCK": 50},
    "every lag searched": {"DIRECT_KEYS": 0, "PAIR_NS": np.inf},
    "every window listed": {"DIRECT_KEYS": 0, "SEARCH_NS": np.inf},
    "every window listed, few pairs at once": {
        "DIRECT_KEYS": 0,
        "SEARCH_NS": np.inf,
        "PAIR_BLOCK": 7,
    },
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["dense ties", "sparse", "auto", "fractional bins"])
def test_cumulative_pair_counts_equal_a_count_over_all_pairs(monkeypatch, strategy, case):
    for name, value in STRATEGIES[strategy].items():
        monkeypatch.setattr(ccg, name, value)
    rng = np.random.default_rng(4)
    tbin = 30.0117 if case == "fractional bins" else 30.0
    span = 60_000 if case == "dense ties" else 1_800_000
    t2 = np.sort(rng.integers(0, span, 1200)).astype(float)
    t1 = t2.copy() if case == "auto" else rng.integers(0, span, 1500).astype(float)  # any order
    lags = correlogram_lags(tbin)
    if case == "fractional bins":
        t1, t2 = t1 + 0.25, t2 + rng.random(t2.size) * 0.5
        t2.sort()
        lags = np.stack([lags, lags[::-1] + 7.3])  # any shape and order, repeated values
    got = ccg.cumulative_pair_counts(t1, t2, lags)
    assert got.dtype == np.int64 and got.shape == np.shape(lags)
    np.testing.assert_array_equal(got, pair_counts_over_all_pairs(t1, t2, lags))
    np.testing.assert_array_equal(
        ccg.cumulative_pair_counts(t1[:0], t2, lags), np.zeros(np.shape(lags), np.int64)
    )
