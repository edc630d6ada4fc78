"""Splits: a cluster holding two neurons is split; one neuron is not."""
import numpy as np
import pytest
import zarr

from curation_fixtures import Unit, build_fixture, poisson_train, refractory_train
from kilosnake.curation.merge import run_merge
from kilosnake.curation.split import fit_bimodality, run_split, same_waveform
from kilosnake.params import resolve


def split_fixture(tmp_path, units, peaks, **kw):
    paths = build_fixture(tmp_path, units, peaks, **kw)
    p = resolve({})
    run_merge(paths.spikes, paths.input_json, p, tmp_path / "merge.zarr")
    state = run_split(paths.spikes, paths.templates, tmp_path / "merge.zarr", paths.input_json,
                      p, tmp_path / "split.zarr")
    return paths, state, zarr.open_group(str(tmp_path / "split.zarr"), mode="r")


def test_two_neurons_in_one_template_are_split_into_a_new_cluster(tmp_path):
    rng = np.random.default_rng(2)
    a, b = refractory_train(rng, 12, 60), refractory_train(rng, 12, 60)
    c = refractory_train(rng, 15, 60)
    units = [Unit(a, 0, peak_channel=2), Unit(b, 0, peak_channel=9), Unit(c, 1)]
    paths, state, g = split_fixture(tmp_path, units, [5, 12])
    assert g.attrs["n_clusters"] == 3 and g.attrs["n_splits"] == 1
    assert g["parent"][...].tolist() == [-1, -1, 0]
    spikes = zarr.open_group(str(paths.spikes), mode="r")
    t, in0 = spikes["time"][...], spikes["template"][...] == 0
    labels = g["cluster"][...]
    from_a = np.unique(labels[in0 & np.isin(t, a)])
    from_b = np.unique(labels[in0 & np.isin(t, b)])
    assert from_a.size == 1 and from_b.size == 1 and {from_a[0], from_b[0]} == {0, 2}
    assert g["similar_templates"][0, 2] == 1.0
    np.testing.assert_array_equal(g["pc_feature_ind"][2], g["pc_feature_ind"][0])
    tmpl = g["templates"][...]
    assert tmpl.shape == (3, 61, 16)
    np.testing.assert_allclose(np.linalg.norm(tmpl.reshape(3, -1), axis=1), 1.0, rtol=1e-5)
    # the new cluster's waveform peaks where its neuron does
    peak_new = np.abs(tmpl[2]).max(axis=0).argmax()
    assert peak_new == (2 if from_a[0] == 2 else 9)


def test_one_neuron_is_not_split_even_with_two_amplitude_modes(tmp_path):
    rng = np.random.default_rng(3)
    a = refractory_train(rng, 25, 60)
    big = rng.random(a.size) < 0.5
    units = [Unit(a[big], 0, amplitude=20), Unit(a[~big], 0, amplitude=8),
             Unit(refractory_train(rng, 20, 60), 1)]
    _, state, g = split_fixture(tmp_path, units, [5, 12])
    assert g.attrs["n_splits"] == 0
    assert state.n_clusters == 2


def test_small_clusters_are_left_alone(tmp_path):
    rng = np.random.default_rng(4)
    units = [Unit(poisson_train(rng, 2, 60), 0, peak_channel=2),
             Unit(poisson_train(rng, 2, 60), 0, peak_channel=9)]
    _, _, g = split_fixture(tmp_path, units, [5])
    assert g.attrs["n_splits"] == 0


def test_bimodality_fit_finds_two_separated_blobs_and_not_one():
    rng = np.random.default_rng(5)
    shift = np.array([8.0, 0, 0, 0, 0, 0])
    two = np.concatenate([rng.normal(0, 1, (600, 6)), rng.normal(0, 1, (400, 6)) + shift])
    fit = fit_bimodality(two)
    assert min(fit.p_low, fit.p_high) > 0.99
    assert sorted([fit.low.sum(), (~fit.low).sum()]) == [400, 600]
    one = rng.normal(0, 1, (4000, 6))
    fit = fit_bimodality(one)
    assert min(fit.p_low, fit.p_high) < 0.9
    assert fit_bimodality(np.ones((50, 4))) is None


def test_waveform_veto():
    rng = np.random.default_rng(6)
    c1 = rng.normal(size=(61, 8))
    assert same_waveform(c1, 1.05 * c1, 0.9, 0.2)
    assert not same_waveform(c1, 2.0 * c1, 0.9, 0.2)
    assert not same_waveform(c1, rng.normal(size=(61, 8)), 0.9, 0.2)


@pytest.mark.parametrize("case", ["zero_spikes", "no_templates", "one_spike", "one_template"])
def test_split_guards(tmp_path, case):
    units, peaks = {"zero_spikes": ([], [3, 6]), "no_templates": ([], []),
                    "one_spike": ([Unit(np.array([5000]), 0)], [3]),
                    "one_template": ([Unit(np.arange(1000, 1700000, 1500), 0)], [3])}[case]
    _, state, g = split_fixture(tmp_path, units, peaks, write_raw=False)
    assert g.attrs["n_clusters"] == len(peaks)
    assert g["templates"].shape == (len(peaks), 61, 16)
    assert g["cluster"].shape == (sum(len(u.times) for u in units),)
