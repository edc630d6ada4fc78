"""Refractoriness statistics (Q, R) of correlograms."""
import numpy as np
import pytest

from curation_fixtures import FS, poisson_train, refractory_train
from kilosnake.curation.ccg import (UNDETERMINED, correlogram, refractory_stats,
                                    refractory_stats_many)


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
