"""Splits: a cluster holding two neurons is split; one neuron is not."""

import numpy as np
import pytest
import zarr
from curation_fixtures import FS, Unit, build_fixture, poisson_train, refractory_train

from kilosnake.curation import split
from kilosnake.curation.data import members_by_label, read_feature_indices, read_templates
from kilosnake.curation.merge import run_merge
from kilosnake.curation.split import fit_bimodality, run_split, same_waveform
from kilosnake.params import resolve
from kilosnake.runtime import parallel


def split_fixture(tmp_path, units, peaks, **kw):
    paths = build_fixture(tmp_path, units, peaks, **kw)
    p = resolve({})
    run_merge(paths.spikes, paths.input_json, p, tmp_path / "merge.zarr")
    state = run_split(
        paths.spikes,
        paths.templates,
        tmp_path / "merge.zarr",
        paths.input_json,
        p,
        tmp_path / "split.zarr",
    )
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
    units = [
        Unit(a[big], 0, amplitude=20),
        Unit(a[~big], 0, amplitude=8),
        Unit(refractory_train(rng, 20, 60), 1),
    ]
    _, state, g = split_fixture(tmp_path, units, [5, 12])
    assert g.attrs["n_splits"] == 0
    assert state.n_clusters == 2


def test_small_clusters_are_left_alone(tmp_path):
    rng = np.random.default_rng(4)
    units = [
        Unit(poisson_train(rng, 2, 60), 0, peak_channel=2),
        Unit(poisson_train(rng, 2, 60), 0, peak_channel=9),
    ]
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
    units, peaks = {
        "zero_spikes": ([], [3, 6]),
        "no_templates": ([], []),
        "one_spike": ([Unit(np.array([5000]), 0)], [3]),
        "one_template": ([Unit(np.arange(1000, 1700000, 1500), 0)], [3]),
    }[case]
    _, state, g = split_fixture(tmp_path, units, peaks, write_raw=False)
    assert g.attrs["n_clusters"] == len(peaks)
    assert g["templates"].shape == (len(peaks), 61, 16)
    assert g["cluster"].shape == (sum(len(u.times) for u in units),)


def split_one_cluster_at_a_time(spikes, labels, templates, indices, sample_rate, s):
    """The visit of the module docstring, one cluster after another, fitting each cluster when
    the visit reaches it (the reference for the fits computed ahead by workers)."""
    n_templates, n_channels = templates.shape[0], templates.shape[2]
    state = split.SplitState(
        np.asarray(labels, np.int64).copy(),
        members_by_label(labels, n_templates),
        list(range(n_templates)),
        [-1] * n_templates,
        list(templates),
        indices["similar_templates"],
    )
    ik = 0
    while ik < state.n_clusters:
        idx, src = state.members[ik], state.source[ik]
        if idx.size < max(s.min_spikes, 2):
            ik += 1
            continue
        feats = split.cluster_features(
            spikes["pc_features"], spikes["template"], idx, src, indices["pc_feature_ind"]
        )
        fit = split.fit_bimodality(feats.reshape(idx.size, -1))
        if not split.accepts_split(fit, s) or split._vetoed(
            fit, idx, feats, spikes["time"], spikes["wpca"], sample_rate, s, ik
        ):
            ik += 1
            continue
        chans = indices["pc_feature_ind"][src]
        waves = [
            split.dense_on_channels(
                split.mean_waveform(feats[m], spikes["wpca"]), chans, n_channels
            )
            for m in (fit.low, ~fit.low)
        ]
        state.add_split(ik, idx[fit.low], idx[~fit.low], *waves)
    return state


def test_split_is_the_same_with_one_or_three_workers_as_one_cluster_at_a_time(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(parallel, "SPIKES_PER_WORKER", 1)  # three processes even for few spikes
    rng = np.random.default_rng(11)

    def train(rate):
        return refractory_train(rng, rate, 60)

    # template 0 holds three neurons (split twice, the second time as a new cluster), template 1
    # two, template 2 one, template 3 too few spikes to test
    units = [
        Unit(train(12), 0, peak_channel=1),
        Unit(train(12), 0, peak_channel=8),
        Unit(train(12), 0, peak_channel=14),
        Unit(train(12), 1, peak_channel=4),
        Unit(train(12), 1, peak_channel=11),
        Unit(train(15), 2),
        Unit(poisson_train(rng, 3, 60), 3),
    ]
    paths = build_fixture(tmp_path, units, [8, 7, 12, 3], write_raw=False)
    p = resolve({})
    run_merge(paths.spikes, paths.input_json, p, tmp_path / "merge.zarr")
    stores = {}
    for workers in (1, 3):
        if workers == 3:  # the workers read the features from the store
            monkeypatch.setattr(split, "IN_MEMORY_BYTES", 0)
        run_split(
            paths.spikes,
            paths.templates,
            tmp_path / "merge.zarr",
            paths.input_json,
            p,
            tmp_path / f"split{workers}.zarr",
            workers=workers,
        )
        stores[workers] = zarr.open_group(str(tmp_path / f"split{workers}.zarr"), mode="r")
    g1, g3 = stores[1], stores[3]
    assert g1.attrs["n_splits"] == 3 and g1["parent"][...].tolist() == [-1, -1, -1, -1, 0, 1, 4]
    assert sorted(g1.array_keys()) == sorted(g3.array_keys())
    for name in g1.array_keys():
        a, b = g1[name][...], g3[name][...]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name

    spikes = {
        k: zarr.open_group(str(paths.spikes), mode="r")[k][...]
        for k in ("time", "template", "pc_features")
    }
    spikes["wpca"] = read_templates(paths.templates).wPCA
    indices = read_feature_indices(paths.spikes)
    labels = zarr.open_group(str(tmp_path / "merge.zarr"), mode="r")["cluster"][...]
    ref = split_one_cluster_at_a_time(
        spikes,
        labels,
        read_templates(paths.templates).dense(),
        indices,
        FS,
        split.SplitSettings.from_params(p),
    )
    np.testing.assert_array_equal(g1["cluster"][...], ref.labels)
    assert g1["parent"][...].tolist() == ref.parent
    assert g1["source_template"][...].tolist() == ref.source
    assert g1["templates"][...].tobytes() == np.stack(ref.templates).tobytes()
    assert g1["similar_templates"][...].tobytes() == ref.similar.astype(np.float32).tobytes()
