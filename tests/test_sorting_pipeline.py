"""detect → learn → final_pass on a tiny whitened recording: units recovered, runs repeatable."""

import numpy as np
import pytest

from kilosnake import params as kparams
from kilosnake.groundtruth.score import load_spikes_store, score_spike_trains
from kilosnake.io.store import open_store
from kilosnake.runtime.backend import cpu_backend
from kilosnake.sorting import detect, final_pass, learn, toy

NT = 16384
SPIKE_ARRAYS = (
    "time",
    "template",
    "amplitude",
    "score",
    "batch",
    "template_features",
    "pc_features",
    "template_feature_ind",
    "pc_feature_ind",
    "similar_templates",
)


def _sort(folder, device, seed=42):
    p = kparams.resolve({"device": device, "seed": seed})
    pre = folder / "preprocessed.zarr"
    detect.run_detect(pre, folder / "detect.zarr", p)
    learn.run_learn(pre, folder / "detect.zarr", folder / "templates.zarr", p)
    final_pass.run_final_pass(pre, folder / "templates.zarr", folder / "spikes.zarr", p)
    return open_store(folder / "spikes.zarr")


@pytest.fixture(scope="module")
def toy_recording():
    return toy.make_toy_recording(n_channels=16, duration_s=6.0, n_units=4, rate_hz=15, seed=11)


def _write_input(folder, rec):
    folder.mkdir()
    toy.write_preprocessed_store(
        folder / "preprocessed.zarr", rec.traces, rec.probe, rec.sample_rate, NT
    )


def test_sorting_recovers_units_and_writes_the_documented_store(be, tmp_path, toy_recording):
    rec = toy_recording
    _write_input(tmp_path / "a", rec)
    g = _sort(tmp_path / "a", be.name)
    times, templates = load_spikes_store(tmp_path / "a" / "spikes.zarr")
    result = score_spike_trains(rec.spike_times, rec.spike_units, times, templates, rec.sample_rate)
    assert result.summary["n_well_detected"] == 4, result.to_text()
    n = times.size
    n_filt = g["similar_templates"].shape[0]
    k = min(32, n_filt)
    assert g["time"].dtype == np.uint64 and g["template"].dtype == np.uint32
    assert g["template_features"].shape == (n, k)
    assert g["pc_features"].shape == (n, 3, 16)
    assert g["template_feature_ind"].shape == (n_filt, k)
    assert g["pc_feature_ind"].shape == (n_filt, 16)
    order = np.lexsort((templates, times))
    np.testing.assert_array_equal(order, np.arange(n))  # sorted by (time, template)
    t = open_store(tmp_path / "a" / "templates.zarr")
    nt0 = t.attrs["nt0"]
    assert t["W"].shape == (nt0, n_filt, 3) and t["U"].shape == (16, n_filt, 3)
    assert t["wPCA"].shape == (nt0, 3) and t["iW"].shape == (n_filt,)


def test_two_cpu_runs_give_identical_spikes(tmp_path, toy_recording):
    stores = []
    for name in ("a", "b"):
        _write_input(tmp_path / name, toy_recording)
        stores.append(_sort(tmp_path / name, "cpu", seed=3))
    for name in SPIKE_ARRAYS:
        np.testing.assert_array_equal(stores[0][name][...], stores[1][name][...], err_msg=name)
    assert stores[0].attrs["n_spikes"] > 0


def test_silent_recording_gives_complete_empty_stores_and_a_warning(tmp_path, caplog):
    rec = toy.make_toy_recording(n_channels=8, duration_s=1.0, n_units=1, rate_hz=0, seed=1)
    _write_input(tmp_path / "s", rec)
    with caplog.at_level("WARNING"):
        g = _sort(tmp_path / "s", "cpu")
    for name in SPIKE_ARRAYS:
        assert g[name].shape[0] == 0, name
    assert g["pc_features"].shape == (0, 3, 8) and g.attrs["n_spikes"] == 0
    det = open_store(tmp_path / "s" / "detect.zarr")
    assert det["dWU"].shape[2] == 0 and not np.any(det["wTEMP"][...])
    t = open_store(tmp_path / "s" / "templates.zarr")
    assert t["W"].shape[1] == 0 and t["pc_channels"].shape == (0, 8)
    warned = [r.name for r in caplog.records if r.getMessage().startswith("no spikes found")]
    assert {"kilosnake.sorting.empty"} == set(warned) and len(warned) == 3


def test_learning_that_keeps_no_template_gives_empty_templates(tmp_path, toy_recording):
    _write_input(tmp_path / "a", toy_recording)
    p = kparams.resolve({"device": "cpu"})
    detect.run_detect(tmp_path / "a" / "preprocessed.zarr", tmp_path / "a" / "detect.zarr", p)
    det = open_store(tmp_path / "a" / "detect.zarr")
    det = {name: np.asarray(det[name][...]) for name in learn.DETECT_ARRAYS}
    nt0, n_chan = det["dWU"].shape[:2]
    none_left = learn.LearnerState(np.zeros((0, nt0, n_chan)), np.zeros(0))
    out = learn.finalise_templates(cpu_backend(), none_left, det, p, m0=1.0)
    assert out["W"].shape == (nt0, 0, 3) and out["U"].shape == (n_chan, 0, 3)
    assert out["similar_templates"].shape == (0, 0) and out["iC"].shape[1] == n_chan


def test_learning_visits_the_first_learn_batches_of_the_seeded_order():
    order = np.array([5, 2, 7, 0, 3])
    assert learn.learning_batches(order, 0).tolist() == [5, 2, 7, 0, 3]
    assert learn.learning_batches(order, 2).tolist() == [5, 2]
    assert learn.learning_batches(order, 9).tolist() == [5, 2, 7, 0, 3]


def test_a_learning_cap_changes_the_templates_only_below_the_batch_count(tmp_path, toy_recording):
    """6 s at NT=16384 is 11 batches: a cap of 11 or more learns as without a cap."""
    _write_input(tmp_path / "a", toy_recording)
    pre = tmp_path / "a" / "preprocessed.zarr"

    def learned(cap):
        p = kparams.resolve({"device": "cpu", "seed": 42, "learn_batches": cap})
        detect.run_detect(pre, tmp_path / "a" / "detect.zarr", p)
        out = tmp_path / "a" / f"templates_{cap}.zarr"
        learn.run_learn(pre, tmp_path / "a" / "detect.zarr", out, p)
        return np.asarray(open_store(out)["dWU"][...])

    every = learned(0)
    assert np.array_equal(every, learned(11))
    fewer = learned(3)
    assert fewer.shape != every.shape or not np.array_equal(fewer, every)
