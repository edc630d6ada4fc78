"""Tests of kilosnake.groundtruth.score on constructed spike trains with known scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kilosnake.errors import InputError
from kilosnake.groundtruth.cli import main
from kilosnake.groundtruth.matching import (
    MATCH_STEP,
    _count_step_matches,
    count_pair_matches,
    greedy_match_count,
    independent_steps,
    tolerance_in_samples,
)
from kilosnake.groundtruth.score import (
    _unit_codes,
    load_spikes_store,
    score_phy_folder,
    score_spike_trains,
)
from kilosnake.groundtruth.truth import load_ground_truth
from kilosnake.io.phy import load_phy_sorting, read_params_py
from kilosnake.io.store import write_array, writing_store

FS = 30000.0
TOL = 12  # 0.4 ms at 30 kHz
N_UNITS = 4
SPACING = 100  # samples between consecutive GT spikes of any unit: no accidental matches


@pytest.fixture
def gt():
    """Four GT units with interleaved spikes, every spike >= 100 samples from every other."""
    rng = np.random.default_rng(0)
    n = 400
    times = np.cumsum(SPACING + rng.integers(0, 200, n)).astype(np.uint64)
    units = rng.integers(0, N_UNITS, n).astype(np.int64)
    return times, units


def by_gt_unit(result):
    return {row["gt_unit"]: row for row in result.per_unit}


def assert_perfect(result, n_units=N_UNITS):
    rows = result.per_unit
    assert len(rows) == n_units
    assert all(
        row["accuracy"] == 1.0 and row["recall"] == 1.0 and row["precision"] == 1.0 for row in rows
    )
    assert all(row["fn"] == 0 and row["fp"] == 0 for row in rows)
    s = result.summary
    assert s["n_well_detected"] == n_units
    assert (s["n_false_positive"], s["n_redundant"], s["n_overmerged"]) == (0, 0, 0)


# --------------------------------------------------------------------------------------------
# matching rule


def test_tolerance_is_rounded_to_samples():
    assert tolerance_in_samples(0.4, 30000.0) == 12
    assert tolerance_in_samples(0.4, 24999.0) == 10  # 9.9996 samples
    assert tolerance_in_samples(0.4, 20000.0) == 8


def test_greedy_is_one_to_one():
    assert greedy_match_count([100], [95, 100, 105], TOL) == 1
    assert greedy_match_count([95, 100, 105], [100], TOL) == 1
    # greedy in time order must not pair 10 with 20 and lose 8: the maximum is 2
    assert greedy_match_count([8, 20], [10, 30], TOL) == 2
    assert greedy_match_count([0], [13], TOL) == 0
    assert greedy_match_count([0], [12], TOL) == 1


def test_pair_counts_equal_per_pair_greedy_on_random_trains():
    rng = np.random.default_rng(3)
    for _ in range(50):
        gt_t = rng.integers(0, 400, rng.integers(0, 50))
        gt_c = rng.integers(0, 3, len(gt_t))
        st_t = rng.integers(0, 400, rng.integers(0, 50))
        st_c = rng.integers(0, 3, len(st_t))
        counts = count_pair_matches(gt_t, gt_c, st_t, st_c, 3, 3, 5)
        for g in range(3):
            for s in range(3):
                expected = greedy_match_count(
                    np.sort(gt_t[gt_c == g]).tolist(), np.sort(st_t[st_c == s]).tolist(), 5
                )
                assert counts[g, s] == expected


def test_spike_near_two_gt_units_counts_for_both_pairs():
    counts = count_pair_matches(
        np.array([100, 105]), np.array([0, 1]), np.array([102]), np.array([0]), 2, 1, TOL
    )
    assert counts[:, 0].tolist() == [1, 1]


def test_doubled_sorted_spikes_count_once(gt):
    times, units = gt
    doubled_t = np.r_[times, times + 3]
    doubled_u = np.r_[units, units]
    result = score_spike_trains(times, units, doubled_t, doubled_u, FS)
    for row in result.per_unit:
        assert row["tp"] == row["n_gt"]
        assert row["fp"] == row["n_gt"]
        assert row["accuracy"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# constructed sortings


def test_perfect_sorting(gt):
    times, units = gt
    result = score_spike_trains(times, units, times.copy(), units.copy(), FS)
    assert_perfect(result)
    assert [row["sorted_unit"] for row in result.per_unit] == list(range(N_UNITS))
    assert np.allclose(np.diag(result.agreement), 1.0)


def test_dropped_and_extra_spikes_change_scores_exactly(gt):
    times, units = gt
    unit0 = np.flatnonzero(units == 0)
    drop = unit0[:20]
    keep = np.setdiff1d(np.arange(len(times)), drop)
    extra = times[units == 1][:10] + 50  # 50 samples from any GT spike: match nothing
    st_t = np.r_[times[keep], extra]
    st_u = np.r_[units[keep], np.ones(10, dtype=np.int64)]
    rows = by_gt_unit(score_spike_trains(times, units, st_t, st_u, FS))
    n0, n1 = len(unit0), int(np.sum(units == 1))
    assert rows[0]["fn"] == 20 and rows[0]["fp"] == 0
    assert rows[0]["recall"] == pytest.approx((n0 - 20) / n0)
    assert rows[0]["accuracy"] == pytest.approx((n0 - 20) / n0)
    assert rows[0]["precision"] == 1.0
    assert rows[1]["fp"] == 10 and rows[1]["recall"] == 1.0
    assert rows[1]["precision"] == pytest.approx(n1 / (n1 + 10))
    assert rows[1]["accuracy"] == pytest.approx(n1 / (n1 + 10))
    assert rows[2]["accuracy"] == rows[3]["accuracy"] == 1.0


@pytest.mark.parametrize("shift", [TOL, -TOL, 5])
def test_shift_within_tolerance_is_perfect(gt, shift):
    times, units = gt
    shifted = times.astype(np.int64) + shift
    assert_perfect(score_spike_trains(times, units, shifted, units, FS))


@pytest.mark.parametrize("shift", [TOL + 1, -(TOL + 1)])
def test_shift_beyond_tolerance_matches_nothing(gt, shift):
    times, units = gt
    shifted = times.astype(np.int64) + shift
    result = score_spike_trains(times, units, shifted, units, FS)
    assert result.n_matches.sum() == 0
    assert all(row["sorted_unit"] == -1 and row["accuracy"] == 0.0 for row in result.per_unit)
    assert result.summary["n_well_detected"] == 0
    assert result.summary["n_false_positive"] == N_UNITS
    # a wider tolerance (0.5 ms = 15 samples) takes them back
    assert_perfect(score_spike_trains(times, units, shifted, units, FS, tolerance_ms=0.5))


def test_merged_units_are_overmerged(gt):
    times, units = gt
    merged = np.where(units == 1, 0, units)
    result = score_spike_trains(times, units, times, merged, FS)
    rows = by_gt_unit(result)
    n0, n1 = int(np.sum(units == 0)), int(np.sum(units == 1))
    assert result.summary["n_overmerged"] == 1
    assert result.overmerged_units == [0]
    matched = [g for g in (0, 1) if rows[g]["sorted_unit"] == 0]
    assert len(matched) == 1
    other = 1 - matched[0]
    assert rows[other]["sorted_unit"] == -1 and rows[other]["accuracy"] == 0.0
    n_matched = n0 if matched[0] == 0 else n1
    assert rows[matched[0]]["accuracy"] == pytest.approx(n_matched / (n0 + n1))
    assert rows[matched[0]]["recall"] == 1.0
    assert result.summary["n_well_detected"] == N_UNITS - 2
    assert result.summary["n_false_positive"] == result.summary["n_redundant"] == 0


def test_split_unit_leaves_one_redundant(gt):
    times, units = gt
    split = units.copy()
    unit2 = np.flatnonzero(units == 2)
    split[unit2[::2]] = 20
    split[unit2[1::2]] = 21
    result = score_spike_trains(times, units, times, split, FS)
    row = by_gt_unit(result)[2]
    assert row["sorted_unit"] in (20, 21)
    assert row["accuracy"] == pytest.approx(row["n_sorted"] / len(unit2))
    assert row["fp"] == 0 and row["fn"] == len(unit2) - row["n_sorted"]
    s = result.summary
    assert (s["n_redundant"], s["n_false_positive"], s["n_overmerged"]) == (1, 0, 0)
    assert result.redundant_units == [41 - row["sorted_unit"]]
    assert s["n_well_detected"] == N_UNITS - 1


def test_noise_unit_is_a_false_positive(gt):
    times, units = gt
    noise_t = times[::3] + 50
    st_t = np.r_[times, noise_t]
    st_u = np.r_[units, np.full(len(noise_t), 99)]
    result = score_spike_trains(times, units, st_t, st_u, FS)
    assert result.false_positive_units == [99]
    assert result.summary["n_false_positive"] == 1
    assert result.summary["n_redundant"] == 0
    assert all(row["accuracy"] == 1.0 for row in result.per_unit)


def test_relabelled_and_shuffled_sorting_scores_the_same(gt):
    times, units = gt
    rng = np.random.default_rng(1)
    new_ids = np.array([707, 3, 12345, 40])
    order = rng.permutation(len(times))
    result = score_spike_trains(
        times[order], units[order], times[order[::-1]], new_ids[units[order[::-1]]], FS
    )
    assert_perfect(result)
    assert {row["gt_unit"]: row["sorted_unit"] for row in result.per_unit} == {
        g: int(new_ids[g]) for g in range(N_UNITS)
    }


def test_empty_sorting(gt):
    times, units = gt
    empty = np.array([], dtype=np.uint64)
    result = score_spike_trains(times, units, empty, empty.astype(np.uint32), FS)
    assert result.agreement.shape == (N_UNITS, 0)
    assert result.summary["n_well_detected"] == 0
    assert result.summary["n_sorted_units"] == 0
    assert all(row["sorted_unit"] == -1 and row["fn"] == row["n_gt"] for row in result.per_unit)
    assert "0 / 4" in result.to_text()
    json.loads(result.to_json())


def test_empty_ground_truth(gt):
    times, units = gt
    empty = np.array([], dtype=np.uint64)
    result = score_spike_trains(empty, empty.astype(np.int64), times, units, FS)
    assert result.summary["n_gt_units"] == 0
    assert result.summary["n_false_positive"] == N_UNITS
    assert "no ground-truth units" in result.to_text()


def test_snr_groups(gt):
    times, units = gt
    snr = np.array([2.0, 6.0, 12.0, 7.0])
    keep = units != 3  # unit 3 (SNR 7) is not found
    result = score_spike_trains(times, units, times[keep], units[keep], FS, gt_snr=snr)
    s = result.summary
    assert s["n_snr_ge_5"] == 3
    assert s["n_snr_ge_5_recall_ge_0.9"] == 2
    assert s["n_snr_ge_5_well_detected"] == 2
    groups = {(g["snr_min"], g["snr_max"]): g for g in s["snr_groups"]}
    assert groups[(None, 3.0)]["n_units"] == 1
    assert groups[(5.0, 10.0)]["n_units"] == 2
    assert groups[(5.0, 10.0)]["mean_recall"] == pytest.approx(0.5)
    assert by_gt_unit(result)[2]["snr"] == 12.0
    assert "SNR >= 5" in result.to_text()


def test_mismatched_lengths_are_refused(gt):
    times, units = gt
    with pytest.raises(InputError):
        score_spike_trains(times, units, times, units[:-1], FS)


def test_well_detected_threshold_is_configurable(gt):
    times, units = gt
    keep = np.ones(len(times), bool)
    keep[np.flatnonzero(units == 0)[: int(np.sum(units == 0)) // 4]] = False  # recall ~0.75
    strict = score_spike_trains(times, units, times[keep], units[keep], FS)
    lenient = score_spike_trains(
        times, units, times[keep], units[keep], FS, well_detected_accuracy=0.7
    )
    assert strict.summary["n_well_detected"] == N_UNITS - 1
    assert lenient.summary["n_well_detected"] == N_UNITS


# --------------------------------------------------------------------------------------------
# files and command line


def write_gt(folder, times, units, sample_rate=FS, snr=None, name="rec"):
    arrays = {"spike_times": times.astype(np.uint64), "spike_units": units.astype(np.int64)}
    if snr is not None:
        arrays["snr"] = np.asarray(snr, dtype=np.float64)
    path = folder / f"{name}_gt.npz"
    np.savez(path, **arrays)
    (folder / f"{name}.meta.json").write_text(json.dumps({"sample_rate": sample_rate}))
    return path


def write_phy(folder, times, clusters, sample_rate=FS, noise=()):
    folder.mkdir()
    np.save(folder / "spike_times.npy", times.astype(np.uint64).reshape(-1, 1))
    np.save(folder / "spike_clusters.npy", clusters.astype(np.int32))
    (folder / "params.py").write_text(
        f"dat_path = r'rec.bin'\nn_channels_dat = 32\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {sample_rate!r}\nhp_filtered = False\n"
        "not_a_literal = open('/this/must/not/run')\n"
    )
    if noise:
        lines = ["cluster_id\tgroup"] + [f"{c}\tnoise" for c in noise] + ["0\tgood"]
        (folder / "cluster_group.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_load_ground_truth_finds_meta(tmp_path, gt):
    times, units = gt
    path = write_gt(tmp_path, times, units, sample_rate=25000.0, snr=[1, 2, 3, 4])
    loaded = load_ground_truth(path)
    assert loaded.sample_rate == 25000.0
    assert loaded.times.dtype == np.uint64 and np.array_equal(loaded.times, times)
    assert np.array_equal(loaded.units, units)
    assert loaded.snr.tolist() == [1, 2, 3, 4]


def test_phy_params_are_parsed_not_run(tmp_path, gt):
    times, units = gt
    folder = write_phy(tmp_path / "phy", times, units, sample_rate=20000.0)
    params = read_params_py(folder)
    assert params["sample_rate"] == 20000.0
    assert params["dat_path"] == "rec.bin"
    assert "not_a_literal" not in params


def test_phy_noise_clusters_are_left_out(tmp_path, gt):
    times, units = gt
    folder = write_phy(tmp_path / "phy", times, units, noise=(3,))
    loaded_t, loaded_c = load_phy_sorting(folder)
    assert 3 not in set(loaded_c.tolist())
    assert len(loaded_t) == int(np.sum(units != 3))
    result = score_phy_folder(folder, write_gt(tmp_path, times, units))
    assert by_gt_unit(result)[3]["sorted_unit"] == -1
    assert result.summary["n_well_detected"] == N_UNITS - 1


def test_phy_folder_sample_rate_comes_from_params(tmp_path, gt):
    times, units = gt
    gt_path = write_gt(tmp_path, times, units, sample_rate=FS)
    shifted = times + 14  # beyond 12 samples (30 kHz), within 16 samples (40 kHz)
    folder = write_phy(tmp_path / "phy", shifted, units, sample_rate=40000.0)
    assert score_phy_folder(folder, gt_path).summary["n_well_detected"] == N_UNITS
    assert score_phy_folder(folder, gt_path, sample_rate=FS).summary["n_well_detected"] == 0


def test_spikes_templates_fallback(tmp_path, gt):
    times, units = gt
    folder = write_phy(tmp_path / "phy", times, units)
    (folder / "spike_clusters.npy").rename(folder / "spike_templates.npy")
    _, labels = load_phy_sorting(folder)
    assert np.array_equal(labels, units)


def test_cli_on_phy_folder(tmp_path, gt, capsys):
    times, units = gt
    gt_path = write_gt(tmp_path, times, units, snr=[3.0, 6.0, 9.0, 20.0])
    merged = np.where(units == 1, 0, units)
    folder = write_phy(tmp_path / "phy", times, merged)
    out_json = tmp_path / "score.json"
    assert main(["--gt", str(gt_path), str(folder), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "Ground-truth scorecard" in text and "overmerged units" in text
    data = json.loads(out_json.read_text())
    assert data["summary"]["n_overmerged"] == 1
    assert data["summary"]["n_well_detected"] == 2
    assert len(data["per_unit"]) == N_UNITS
    assert data["summary"]["sample_rate"] == FS


def test_cli_on_spikes_store(tmp_path, gt, capsys):
    times, units = gt
    gt_path = write_gt(tmp_path, times, units)
    order = np.lexsort((units, times))
    with writing_store(tmp_path / "spikes.zarr", "final_pass") as store:
        write_array(store, "time", times[order].astype(np.uint64), chunks=(128,))
        write_array(store, "template", (units[order] + 7).astype(np.uint32), chunks=(128,))
    loaded_t, loaded_u = load_spikes_store(tmp_path / "spikes.zarr")
    assert np.array_equal(loaded_u, units[order] + 7)
    rc = main(
        [
            "--gt",
            str(gt_path),
            str(tmp_path / "spikes.zarr"),
            "--sample-rate",
            "30000",
            "--tolerance-ms",
            "0.4",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "well detected (accuracy >= 0.8)" in text
    assert f"{N_UNITS} / {N_UNITS}" in text


def test_cli_reports_a_bad_sorting_path(tmp_path, gt, capsys):
    times, units = gt
    gt_path = write_gt(tmp_path, times, units)
    (tmp_path / "empty").mkdir()
    assert main(["--gt", str(gt_path), str(tmp_path / "empty")]) == 1
    assert "neither a Phy folder nor a Zarr store" in capsys.readouterr().err


def test_matching_in_stretches_of_time_counts_as_matching_at_once():
    rng = np.random.default_rng(7)
    gt_t = np.sort(rng.integers(0, 3_000_000, 20_000))
    gt_c = rng.integers(0, 6, gt_t.size)
    jitter = rng.integers(-15, 16, gt_t.size)
    st_t = np.sort(np.concatenate([gt_t + jitter, rng.integers(0, 3_000_000, 3_000)]))
    st_c = rng.integers(0, 8, st_t.size)
    whole = count_pair_matches(gt_t, gt_c, st_t, st_c, 6, 8, 12)  # one stretch
    assert st_t.size < MATCH_STEP
    steps = list(independent_steps(gt_t, st_t, 12, step=500))
    assert len(steps) > 10
    assert sum(s.stop - s.start for _, s in steps) == st_t.size
    assert sum(g.stop - g.start for g, _ in steps) == gt_t.size
    stepped = np.zeros_like(whole)
    for g, s in steps:
        _count_step_matches(stepped, gt_t[g], gt_c[g], st_t[s], st_c[s], 12)
    np.testing.assert_array_equal(stepped, whole)


def test_a_sorting_without_spikes_scores_every_unit_as_missed():
    result = score_spike_trains(
        np.array([100, 5000, 9000]),
        np.array([0, 1, 1]),
        np.zeros(0, np.uint64),
        np.zeros(0, np.int64),
        30000.0,
    )
    assert result.summary["n_sorted_units"] == 0 and result.summary["n_well_detected"] == 0
    assert [row["fn"] for row in result.per_unit] == [1, 2]
    assert "0 / 2" in result.to_text()


@pytest.mark.parametrize(
    "units",
    [np.array([7, 3, 3, 0, 7, 12]), np.array([-2, 5, 5, 1 << 40])],
    ids=["small-ids", "large-or-negative-ids"],
)
def test_unit_codes_are_those_of_np_unique(units):
    ids, codes, counts = _unit_codes(units)
    want_ids, want_codes, want_counts = np.unique(units, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(counts, want_counts)
