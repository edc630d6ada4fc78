"""Merges: one neuron sorted into two templates is merged back; two neurons are not."""

import numpy as np
import zarr
from curation_fixtures import Unit, build_fixture, refractory_train

from kilosnake.curation.merge import find_merges, run_merge
from kilosnake.params import resolve


def test_two_halves_of_one_neuron_merge_into_the_larger(tmp_path):
    rng = np.random.default_rng(1)
    a = refractory_train(rng, 20, 60)
    small = rng.random(a.size) < 0.35
    b, c = refractory_train(rng, 15, 60), refractory_train(rng, 15, 60)
    units = [Unit(a[small], 0), Unit(a[~small], 1, peak_channel=4), Unit(b, 2), Unit(c, 3)]
    paths = build_fixture(tmp_path, units, [4, 5, 10, 11])
    result = run_merge(paths.spikes, paths.input_json, resolve({}), tmp_path / "merge.zarr")
    assert result.template_cluster.tolist() == [1, 1, 2, 3]
    assert [m[:2] for m in result.merges] == [(0, 1)]
    g = zarr.open_group(str(tmp_path / "merge.zarr"), mode="r")
    spikes = zarr.open_group(str(paths.spikes), mode="r")
    expected = np.array([1, 1, 2, 3])[spikes["template"][...]]
    np.testing.assert_array_equal(g["cluster"][...], expected)
    assert g["cluster"].dtype == np.uint32 and g.attrs["complete"]


def test_similar_but_independent_neurons_do_not_merge(tmp_path):
    rng = np.random.default_rng(2)
    units = [Unit(refractory_train(rng, 15, 60), 0), Unit(refractory_train(rng, 15, 60), 1)]
    paths = build_fixture(tmp_path, units, [5, 5], similar=np.array([[1, 0.99], [0.99, 1]]))
    result = run_merge(paths.spikes, paths.input_json, resolve({}), tmp_path / "merge.zarr")
    assert result.merges == []


def test_similarity_threshold_gates_the_merge():
    rng = np.random.default_rng(3)
    a = refractory_train(rng, 20, 60)
    half = rng.random(a.size) < 0.5
    times = np.sort(a).astype(np.uint64)
    templates = np.where(np.isin(times, a[half]), 0, 1)
    low = np.array([[1.0, 0.4], [0.4, 1.0]])
    assert find_merges(times, templates, low, 30000.0, sim_min=0.5).merges == []
    assert len(find_merges(times, templates, low, 30000.0, sim_min=0.3).merges) == 1


def test_merge_of_empty_and_tiny_sortings(tmp_path):
    p = resolve({})
    for name, units, peaks in [
        ("zero", [], [3, 6]),
        ("none", [], []),
        ("one_spike", [Unit(np.array([5000]), 0)], [3]),
        ("one_template", [Unit(np.arange(1000, 900000, 3000), 0)], [3]),
    ]:
        paths = build_fixture(tmp_path / name, units, peaks, write_raw=False)
        result = run_merge(paths.spikes, paths.input_json, p, tmp_path / name / "merge.zarr")
        assert result.merges == []
        g = zarr.open_group(str(tmp_path / name / "merge.zarr"), mode="r")
        assert g["template_cluster"].shape == (len(peaks),)
        assert g["merges"].shape == (0, 2)
