"""SpikeInterface in and out: a ground-truth recording of SpikeInterface's generator sorted with
``run_kilosnake`` (written to a flat binary) and with ``run_sorter("kilosnake")`` (a binary
folder, read in place), scored with SpikeInterface's ground-truth comparison."""

from pathlib import Path

import numpy as np
import pytest

si = pytest.importorskip("spikeinterface.core")
sc = pytest.importorskip("spikeinterface.comparison")

pytestmark = pytest.mark.slow

N_UNITS = 6


@pytest.fixture(scope="module")
def ground_truth():
    recording, sorting = si.generate_ground_truth_recording(
        durations=[30.0], sampling_frequency=30000.0, num_channels=32, num_units=N_UNITS, seed=2
    )
    return recording, sorting


def well_detected(gt_sorting, sorting):
    comparison = sc.compare_sorter_to_ground_truth(gt_sorting, sorting, exhaustive_gt=True)
    return comparison.get_well_detected_units(well_detected_score=0.8)


def test_run_kilosnake_round_trip(ground_truth, tmp_path):
    import kilosnake.spikeinterface as ks

    recording, gt_sorting = ground_truth
    sorting = ks.run_kilosnake(recording, tmp_path / "out", cores=2, device="cpu")
    assert (tmp_path / "out" / "recording.dat").is_file()  # a generated recording is written
    assert sorting.get_sampling_frequency() == recording.get_sampling_frequency()
    keys = set(sorting.get_property_keys())
    assert {"KSLabel", "ContamPct", "Amplitude", "firing_rate_hz", "snr"} <= keys, keys
    assert len(well_detected(gt_sorting, sorting)) >= N_UNITS - 1  # measured: 6 of 6
    counts = np.array([sorting.count_num_spikes_per_unit()[u] for u in sorting.unit_ids])
    np.testing.assert_array_equal(sorting.get_property("n_spikes")[counts > 0], counts[counts > 0])


def test_run_sorter_reads_a_binary_folder_in_place(ground_truth, tmp_path):
    import spikeinterface.sorters as ss

    import kilosnake.spikeinterface  # noqa: F401  (registers the sorter)

    recording, gt_sorting = ground_truth
    saved = recording.save(folder=tmp_path / "binary", format="binary")
    assert "kilosnake" in ss.available_sorters()
    sorting = ss.run_sorter(
        "kilosnake", saved, folder=tmp_path / "sorted", cores=2, device="cpu", verbose=False
    )
    output = Path(tmp_path / "sorted" / "sorter_output")
    assert not (output / "recording.dat").exists()  # the binary folder is read in place
    assert len(well_detected(gt_sorting, sorting)) >= N_UNITS - 1  # measured: 6 of 6
