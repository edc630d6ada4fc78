"""Score cutoff, good/mua labels and per-unit metrics."""

import numpy as np
import zarr
from curation_fixtures import FS, Unit, build_fixture, poisson_train, refractory_train, run_curation

from kilosnake.curation.cutoff import cluster_cutoff, run_cutoff, template_spread, thresholds
from kilosnake.curation.metrics import presence_ratio, rp_contamination
from kilosnake.params import resolve
from kilosnake.runtime import parallel


def test_clean_unit_is_good_and_contaminated_unit_is_mua(tmp_path):
    rng = np.random.default_rng(7)
    clean = refractory_train(rng, 20, 120)
    core = refractory_train(rng, 20, 120)
    noise = poisson_train(rng, 15, 120)
    units = [Unit(clean, 0), Unit(core, 1), Unit(noise, 1, peak_channel=12)]
    paths = build_fixture(tmp_path, units, [4, 12], duration_s=120)
    stores = run_curation(paths)
    g = zarr.open_group(str(stores["cutoff"]), mode="r")
    assert g["good"][...].tolist() == [True, False]
    contamination = g["contamination"][...]
    assert contamination[0] < 0.05 and 0.2 < contamination[1] <= 1.0
    assert g["keep"].dtype == bool and g["keep"][...].sum() == g["n_kept"][...].sum()


def test_low_scoring_spikes_below_the_threshold_are_dropped():
    rng = np.random.default_rng(8)
    good = refractory_train(rng, 20, 120).astype(float)
    junk = poisson_train(rng, 20, 120).astype(float)
    times = np.concatenate([good, junk])
    scores = np.concatenate([rng.uniform(12, 30, good.size), rng.uniform(4.1, 7.9, junk.size)])
    order = np.argsort(times)
    res = cluster_cutoff(times[order], scores[order], FS, 10.0, 4.0)
    assert res.refractory_good
    assert 7.9 <= res.threshold <= 12.0
    assert res.contamination < 0.05


def test_unit_failing_at_the_first_threshold_keeps_only_the_best_spikes():
    rng = np.random.default_rng(9)
    t = poisson_train(rng, 40, 100).astype(float)
    scores = rng.uniform(5, 20, t.size)
    res = cluster_cutoff(t, scores, FS, 10.0, 4.0)
    assert not res.refractory_good and res.threshold == 10.5
    assert 0.5 < res.contamination <= 1.0


def test_thresholds_descend_in_half_steps_inclusive():
    np.testing.assert_allclose(thresholds(10, 8), [10, 9.5, 9, 8.5, 8])
    np.testing.assert_allclose(thresholds(6, 3), [6, 5.5, 5, 4.5, 4, 3.5, 3])


def test_spatially_spread_template_is_not_good():
    xc = np.tile([0.0, 32.0], 32)
    yc = np.repeat(np.arange(32) * 20.0, 2)
    local = np.zeros((61, 64))
    local[20, 10] = 1.0
    local[20, 11] = 0.5
    spread = np.zeros((61, 64))
    spread[20, :] = 1.0
    assert template_spread(local, xc, yc) < 30
    assert template_spread(spread, xc, yc) > 100
    assert template_spread(np.zeros((61, 64)), xc, yc) == np.inf


def test_rp_contamination_and_presence_ratio():
    rng = np.random.default_rng(10)
    refr = refractory_train(rng, 20, 300) / FS
    pois = poisson_train(rng, 20, 300) / FS
    assert rp_contamination(refr, 300.0) == 0.0
    assert 0.6 < rp_contamination(pois, 300.0) <= 1.0
    burst = np.sort(np.concatenate([pois, pois + 0.0005]))
    assert rp_contamination(burst, 300.0) == 1.0
    assert np.isnan(rp_contamination(refr[:1], 300.0))
    assert presence_ratio(refr, 300.0) == 1.0
    assert presence_ratio(refr[refr < 150], 300.0) == 0.5  # 10 bins of 30 s


def test_cutoff_guards(tmp_path):
    for name, units, peaks in [
        ("zero", [], [3, 6]),
        ("none", [], []),
        ("one", [Unit(np.array([5000]), 0)], [3]),
    ]:
        paths = build_fixture(tmp_path / name, units, peaks, write_raw=False)
        stores = run_curation(paths)
        g = zarr.open_group(str(stores["cutoff"]), mode="r")
        assert g["good"].shape == (len(peaks),)
        assert not g["good"][...].any()
        assert np.all((g["contamination"][...] >= 0) & (g["contamination"][...] <= 1))


def test_cutoff_is_the_same_with_one_or_three_workers_as_cluster_by_cluster(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "SPIKES_PER_WORKER", 1)  # three processes even for few spikes
    rng = np.random.default_rng(12)
    clean, core = refractory_train(rng, 20, 60), refractory_train(rng, 20, 60)
    junk = poisson_train(rng, 20, 60)
    units = [
        Unit(clean, 0),
        Unit(core, 1),
        Unit(poisson_train(rng, 15, 60), 1, peak_channel=12),
        Unit(junk, 2, scores=rng.uniform(4.1, 7.9, junk.size)),
        Unit(refractory_train(rng, 5, 60), 3),
        Unit(np.array([5000]), 4),
    ]
    paths = build_fixture(tmp_path, units, [4, 12, 8, 1, 14], write_raw=False)
    stores = run_curation(paths)
    p = resolve({})
    groups = {}
    for workers in (1, 3):
        out = tmp_path / f"cutoff{workers}.zarr"
        run_cutoff(
            paths.spikes,
            stores["split"],
            paths.whitening,
            paths.input_json,
            p,
            p["Th"],
            out,
            workers=workers,
        )
        groups[workers] = zarr.open_group(str(out), mode="r")
    assert sorted(groups[1].array_keys()) == sorted(groups[3].array_keys())
    for name in groups[1].array_keys():
        a, b = groups[1][name][...], groups[3][name][...]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name

    spikes = zarr.open_group(str(paths.spikes), mode="r")
    times, scores = spikes["time"][...].astype(np.float64), spikes["score"][...]
    labels = zarr.open_group(str(stores["split"]), mode="r")["cluster"][...]
    g = groups[3]
    assert g["refractory_good"][...].any() and not g["refractory_good"][...].all()
    for c in np.unique(labels):  # clusters with spikes (folded-away ones have none)
        res = cluster_cutoff(
            times[labels == c],
            scores[labels == c],
            FS,
            p["Th"][0],
            p["Th"][1],
            p["cutoff_fcont"],
            p["cutoff_R_max"],
        )
        assert (g["threshold"][c], g["contamination"][c], g["refractory_good"][c]) == (
            res.threshold,
            res.contamination,
            res.refractory_good,
        )


def test_every_label_comes_with_its_reason():
    from kilosnake.curation.cutoff import ClusterCutoff, label_reason, min_refractory_R

    def reason(test, n=100, spread=20.0, duration=30.0):
        return label_reason(test, n, spread, duration, 0.1, 0.05, 100.0)

    passed = ClusterCutoff(10.5, 0.0, True, 0.0, 0.001, 500)
    assert reason(passed) == "good"
    assert reason(passed, spread=140.0) == "template spread 140 µm >= 100 µm"
    assert reason(passed, spread=np.inf) == "template spread empty template >= 100 µm"
    assert reason(passed, n=0) == "no spikes"
    assert reason(ClusterCutoff(10.5, 1.0, False)) == "no spike scores above the cutoff thresholds"
    few = ClusterCutoff(10.5, 1.0, False, 1.0, 1.0, 17)
    assert reason(few) == "too few spikes for a refractory test (17 in 30 s)"
    dirty = ClusterCutoff(10.5, 0.3, False, 0.23, 0.01, 900)
    assert reason(dirty) == "contamination 0.23 > 0.1"
    weak = ClusterCutoff(10.5, 0.0, False, 0.0, 0.07, 132)
    assert reason(weak) == "refractory dip not significant in 30 s (R 0.07 > 0.05, 132 spikes)"
    # the bound: with no violation at all, more spikes or a longer recording make R smaller
    assert min_refractory_R(20, 30.0) > 0.05 > min_refractory_R(200, 30.0)
    assert min_refractory_R(100, 600.0) > min_refractory_R(100, 30.0)


def test_the_cutoff_store_records_why_each_cluster_is_mua(tmp_path):
    rng = np.random.default_rng(7)
    units = [Unit(refractory_train(rng, 20, 120), 0), Unit(poisson_train(rng, 30, 120), 1)]
    paths = build_fixture(tmp_path, units, [4, 12], duration_s=120)
    stores = run_curation(paths)
    g = zarr.open_group(str(stores["cutoff"]), mode="r")
    reasons = g.attrs["label_reason"]
    assert len(reasons) == g["good"].shape[0]
    assert reasons[0] == "good" and g["good"][0]
    assert reasons[1].startswith("contamination") and not g["good"][1]
