"""Duplicate spikes, folds of clusters too small to be units and of pieces of units
(kilosnake.curation.fold)."""

import numpy as np
import pytest

from kilosnake.curation.fold import coincident_pairs, duplicate_spikes, fold_small_clusters


def _sorted_train(times, clusters):
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.asarray(clusters)[order]


def test_coincident_pairs_are_the_pairs_of_different_clusters_within_the_window():
    times = np.array([0, 2, 3, 10, 20, 21, 21])
    clusters = np.array([0, 1, 0, 0, 2, 2, 3])
    i, k = coincident_pairs(times, clusters, window=3)
    pairs = sorted(zip(i.tolist(), k.tolist()))
    # (0, 1): 2 samples apart; (1, 2): 1 apart; (0, 2) same cluster; (4, 6), (5, 6)
    assert pairs == [(0, 1), (1, 2), (4, 6), (5, 6)]


def test_a_cluster_repeating_another_is_marked_and_the_original_keeps_its_spikes():
    rng = np.random.default_rng(0)
    big = np.sort(rng.choice(3_000_000, 2000, replace=False))
    copy = big[::4] + rng.integers(0, 2, big[::4].size)  # a quarter of its events, again
    other = np.sort(rng.choice(3_000_000, 800, replace=False))  # an independent neighbour
    times, clusters = _sorted_train(
        np.concatenate([big, copy, other]),
        np.concatenate([np.zeros(big.size), np.ones(copy.size), np.full(other.size, 2)]).astype(
            int
        ),
    )
    dup = duplicate_spikes(times, clusters, 3, window=7, min_fraction=0.5)
    assert dup[clusters == 1].all()
    assert not dup[clusters == 0].any()
    assert not dup[clusters == 2].any()


def test_coincidences_below_the_fraction_are_not_duplicates():
    big = np.arange(0, 3_000_000, 1500)
    partial = np.concatenate([big[:100], np.arange(5_000_000, 5_000_000 + 300 * 1500, 1500)])
    times, clusters = _sorted_train(
        np.concatenate([big, partial]), np.r_[np.zeros(big.size, int), np.ones(partial.size, int)]
    )
    assert not duplicate_spikes(times, clusters, 2, window=7, min_fraction=0.5).any()
    # the same coincidences are a majority when the fraction asked for is lower
    assert duplicate_spikes(times, clusters, 2, window=7, min_fraction=0.2).sum() == 100


def test_fragments_gather_into_one_cluster_and_a_lonely_one_stays():
    sizes = np.array([500, 5, 8, 12, 3, 0])
    sim = np.array(
        [
            [0.0, 0.2, 0.1, 0.1, 0.1, 0.0],
            [0.2, 0.0, 0.8, 0.7, 0.1, 0.0],
            [0.1, 0.8, 0.0, 0.75, 0.1, 0.0],
            [0.1, 0.7, 0.75, 0.0, 0.1, 0.0],
            [0.1, 0.1, 0.1, 0.1, 0.0, 0.9],  # most like an empty cluster: that does not count
            [0.0, 0.0, 0.0, 0.0, 0.9, 0.0],
        ]
    )
    cluster_of = np.arange(6)
    folds = fold_small_clusters(cluster_of, sizes, sim, min_spikes=30, sim_min=0.6)
    # 4 (3 spikes) finds nothing similar; 1 -> 2, then 2 (13) -> 3 (25): 3 stays under 30 but
    # its most similar live cluster (0, 0.1) is not similar enough
    assert [f[:2] for f in folds] == [(1, 2), (2, 3)]
    assert cluster_of.tolist() == [0, 3, 3, 3, 4, 5]


def test_no_folds_when_every_cluster_is_large_enough():
    sizes = np.array([40, 31, 30])
    sim = np.full((3, 3), 0.9)
    np.fill_diagonal(sim, 0.0)
    cluster_of = np.arange(3)
    assert fold_small_clusters(cluster_of, sizes, sim, min_spikes=30, sim_min=0.6) == []
    assert cluster_of.tolist() == [0, 1, 2]


def test_cutoff_leaves_duplicates_out_folds_fragments_and_labels_lonely_ones_noise():
    from kilosnake.curation.cutoff import apply_cutoff

    rate = 30000.0
    rng = np.random.default_rng(3)
    unit = np.sort(rng.choice(np.arange(0, 9_000_000, 60), 900, replace=False))
    fragment = np.sort(rng.choice(np.arange(30, 9_000_000, 60), 10, replace=False))
    lonely = np.sort(rng.choice(np.arange(45, 9_000_000, 60), 6, replace=False))
    copies = unit[:50]  # a duplicate of 50 of the unit's spikes, marked by the merge stage
    times, labels = _sorted_train(
        np.concatenate([unit, fragment, lonely, copies]),
        np.concatenate([np.zeros(900), np.ones(10), np.full(6, 2), np.full(50, 3)]).astype(int),
    )
    duplicate = labels == 3
    templates = np.zeros((4, 20, 4), np.float32)
    templates[:, 10, 0] = 1.0
    sim = np.array([[1, 0.9, 0.1, 0.2], [0.9, 1, 0.1, 0.2], [0.1, 0.1, 1, 0.1], [0.2, 0.2, 0.1, 1]])
    res = apply_cutoff(
        times,
        np.full(times.size, 20.0),
        labels,
        4,
        templates,
        np.zeros(4),
        np.arange(4) * 20.0,
        rate,
        (10.0, 4.0),
        min_unit_spikes=30,
        duplicates_among=lambda among: duplicate & among,
        similarity=sim,
        fold_sim_min=0.6,
    )
    assert not res.keep[duplicate].any() and res.keep[~duplicate].all()
    assert res.cluster_of.tolist() == [0, 0, 2, 3]
    assert res.noise.tolist() == [False, False, True, False]
    assert res.reasons[1].startswith("folded into cluster 0")
    assert res.reasons[2].startswith("not a unit: 6 spikes")
    assert res.reasons[3] == "no spikes"


def test_duplicates_do_not_depend_on_the_order_of_the_spikes():
    rng = np.random.default_rng(1)
    big = np.sort(rng.choice(3_000_000, 1000, replace=False))
    times = np.concatenate([big, big[:300] + 1, rng.choice(3_000_000, 200, replace=False)])
    clusters = np.r_[np.zeros(1000, int), np.ones(300, int), np.full(200, 2)]
    in_time = duplicate_spikes(*_sorted_train(times, clusters), 3, window=7, min_fraction=0.5)
    perm = rng.permutation(times.size)
    shuffled = duplicate_spikes(times[perm], clusters[perm], 3, window=7, min_fraction=0.5)
    assert shuffled.sum() == in_time.sum() == 300
    assert shuffled[clusters[perm] == 1].all()


def test_the_weaker_fit_of_an_event_is_the_copy_even_when_it_has_more_spikes():
    rng = np.random.default_rng(2)
    events = np.sort(rng.choice(np.arange(0, 9_000_000, 100), 1000, replace=False))
    strong = events[:900]  # the unit, well fitted (it misses 100 events)
    weak = events + 20  # a template fitted to a later phase: every event, 0.67 ms late
    times = np.concatenate([strong, weak])
    clusters = np.r_[np.zeros(900, int), np.ones(1000, int)]
    amplitudes = np.r_[np.full(900, 20.0), np.full(1000, 6.0)]
    order = np.argsort(times, kind="stable")
    dup = duplicate_spikes(
        times[order], clusters[order], 2, window=45, min_fraction=0.5, amplitudes=amplitudes[order]
    )
    on_copy = dup[clusters[order] == 1]
    assert on_copy.sum() == 900 and not dup[clusters[order] == 0].any()
    # by spike count alone, the unit itself would have been taken for the copy
    by_size = duplicate_spikes(times[order], clusters[order], 2, window=45, min_fraction=0.5)
    assert by_size[clusters[order] == 0].all()


def test_time_separation_tells_a_unit_cut_in_time_from_two_neurons_firing_throughout():
    from kilosnake.curation.ccg import time_separation

    rng = np.random.default_rng(4)
    first_half, second_half = rng.uniform(0, 150, 800), rng.uniform(150, 300, 800)
    assert time_separation(first_half, second_half) > 0.9
    neuron_a, neuron_b = rng.uniform(0, 300, 800), rng.uniform(0, 300, 400)
    assert time_separation(neuron_a, neuron_b) < 0.2
    assert time_separation(neuron_a, np.zeros(0)) == 0.0


# --------------------------------------------------------------------------------------------
# pieces of units

RATE = 30000.0
REFRACTORY = 45  # 1.5 ms
BASELINE = 1500  # 50 ms


def refractory_train(rng, n, duration=9_000_000, gap=REFRACTORY + 15):
    """``n`` spike times at least ``gap`` samples apart (one neuron)."""
    slots = np.sort(rng.choice(duration // gap, n, replace=False))
    return slots * gap


def test_collisions_of_independent_trains_are_about_the_number_expected():
    from kilosnake.curation.fold import coincidences

    rng = np.random.default_rng(5)
    unit = np.sort(rng.choice(9_000_000, 6000, replace=False))  # 20 Hz
    neighbour = np.sort(rng.choice(9_000_000, 600, replace=False))
    seen, expected = coincidences(neighbour, unit, REFRACTORY, BASELINE)
    assert expected == pytest.approx(600 * 20 * 2 * REFRACTORY / RATE, rel=0.2)  # about 36
    assert 0.6 * expected < seen < 1.4 * expected
    one_neuron = refractory_train(rng, 6600)
    piece, rest = one_neuron[::11], np.delete(one_neuron, np.s_[::11])
    seen, expected = coincidences(piece, rest, REFRACTORY, BASELINE)
    assert seen == 0 and expected > 20


def pieces_case(rng):
    """Cluster 0: a unit; 1: its weaker spikes; 2: an independent weaker neighbour of similar
    template; 3 and 4: one neuron cut in time (before and after drift); 5: a neuron at another
    place."""
    neuron = refractory_train(rng, 6600)
    weaker = np.zeros(neuron.size, bool)
    weaker[::11] = True
    drifting = refractory_train(rng, 3000)
    trains = {
        0: neuron[~weaker],
        1: neuron[weaker],
        2: np.sort(rng.choice(9_000_000, 500, replace=False)),
        3: drifting[drifting < 4_000_000],  # the smaller part
        4: drifting[drifting >= 4_000_000],
        5: np.sort(rng.choice(9_000_000, 400, replace=False)),
    }
    sizes = np.array([trains[c].size for c in range(6)])
    amplitude = np.array([20.0, 10.0, 12.0, 15.0, 13.0, 11.0])
    sim = np.full((6, 6), 0.1)
    sim[0, 1] = sim[1, 0] = 0.75
    sim[0, 2] = sim[2, 0] = 0.8
    sim[3, 4] = sim[4, 3] = 0.85
    np.fill_diagonal(sim, 0.0)
    return trains, sizes, amplitude, sim


def fold_the_pieces(trains, sizes, sim, **changes):
    from kilosnake.curation.fold import fold_pieces

    settings = dict(sim_min=0.6, max_fraction=0.25, max_coincidence=0.2, min_separation=0.5)
    settings.update(changes)
    cluster_of = np.arange(sizes.size)
    folds = fold_pieces(
        cluster_of, sizes, sim, dict(trains), **settings,
        window=REFRACTORY, baseline=BASELINE,
    )  # fmt: skip
    return cluster_of, folds


def test_weaker_pieces_and_a_unit_cut_in_time_are_folded_an_independent_neighbour_is_not():
    trains, sizes, _, sim = pieces_case(np.random.default_rng(6))
    cluster_of, folds = fold_the_pieces(trains, sizes, sim)
    assert cluster_of.tolist() == [0, 0, 2, 4, 4, 5]
    assert [f[:2] for f in folds] == [(1, 0), (3, 4)]  # smallest first, into the larger
    assert folds[0][2] == pytest.approx(0.75)


def test_no_piece_below_the_similarity_or_above_the_size_fraction():
    trains, sizes, _, sim = pieces_case(np.random.default_rng(6))
    cluster_of, _ = fold_the_pieces(trains, sizes, sim, sim_min=0.9)
    assert cluster_of.tolist() == list(range(6))
    cluster_of, _ = fold_the_pieces(trains, sizes, sim, max_fraction=0.05)
    assert cluster_of[1] == 1  # 600 of 6000 spikes is more than 5 %
    cluster_of, _ = fold_the_pieces(trains, sizes, sim, max_coincidence=1e9)
    assert cluster_of[2] == 0  # without the collision test the neighbour would be lost


def test_the_cutoff_stage_folds_pieces_among_its_kept_spikes_and_says_why():
    from kilosnake.curation.cutoff import SpikeColumns, apply_cutoff

    trains, _, amplitude, sim = pieces_case(np.random.default_rng(7))
    times, labels = _sorted_train(
        np.concatenate([trains[c] for c in range(6)]),
        np.concatenate([np.full(trains[c].size, c) for c in range(6)]),
    )
    params = {
        "duplicate_spike_ms": 2.0, "duplicate_fraction": 0.5, "fold_sim_min": 0.6,
        "piece_max_fraction": 0.25, "piece_max_coincidence": 0.2, "piece_time_separation": 0.5,
    }  # fmt: skip
    columns = SpikeColumns(times, labels, amplitude[labels], 6, RATE, params)
    templates = np.zeros((6, 20, 4), np.float32)
    templates[:, 10, 0] = 1.0
    res = apply_cutoff(
        times, np.full(times.size, 20.0), labels, 6, templates, np.zeros(4),
        np.arange(4) * 20.0, RATE, (10.0, 4.0), min_unit_spikes=30,
        duplicates_among=columns.duplicates_among, similarity=sim, fold_sim_min=0.6,
        piece_folds=columns.piece_folds,
    )  # fmt: skip
    assert res.cluster_of.tolist() == [0, 0, 2, 4, 4, 5]
    assert res.reasons[1].startswith("folded into cluster 0 (a piece of it")
    assert res.n_kept[0] == trains[0].size + trains[1].size and res.n_kept[1] == 0
    assert not res.good[1] and not res.good[3]  # folded clusters keep no label of their own


def test_a_unit_takes_small_pieces_up_to_the_fraction_in_all():
    rng = np.random.default_rng(8)
    neuron = refractory_train(rng, 5000)
    which = rng.permutation(np.repeat([0, 1, 2], [3000, 450, 450]))  # interleaved in time
    trains = {c: neuron[:3900][which == c] for c in range(3)}  # 15 % each
    sizes = np.array([t.size for t in trains.values()])
    sim = np.array([[0.0, 0.9, 0.8], [0.9, 0.0, 0.1], [0.8, 0.1, 0.0]])
    cluster_of, folds = fold_the_pieces(trains, sizes, sim)
    # 450 + 450 spikes would be 30 % of the unit's 3000: the second piece stays apart
    assert [f[:2] for f in folds] == [(1, 0)] and cluster_of.tolist() == [0, 0, 2]
