"""The drift stage's spike detections made while preprocessing writes the traces: the same
values as detecting on the finished store, for a whole run and for any scatter into blocks."""

import logging

import numpy as np
import pytest
from backends import backends_agree

from kilosnake.drift.detection import (
    DETECTIONS_GROUP,
    DetectionWhilePreprocessing,
    detect_spikes,
    stored_detections,
    unwhitening_matrix,
)
from kilosnake.drift.estimate import estimate_drift
from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.presets import preset_config
from kilosnake.io.probe import load_probe
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader
from kilosnake.params import resolve
from kilosnake.preprocess.gather import gather_preprocessed
from kilosnake.preprocess.traces import preprocess_recording
from kilosnake.preprocess.whitening import compute_whitening
from kilosnake.runtime.backend import cpu_backend

NT = 15000  # 0.5 s batches; 6.2 s: 13 batches, the last one short
THRESHOLD = 8.0


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detections")
    cfg = preset_config("drift", n_channels=32, duration_s=6.2, n_units=12)
    paths = generate(cfg, folder, name="rec", seed=5)
    info = RecordingInfo(str(paths.bin), cfg.n_channels_total, "int16", cfg.sample_rate)
    p = resolve({"NT": NT, "device": "cpu", "spkTh_drift": THRESHOLD})
    compute_whitening(info, load_probe(paths.probe), p, cpu_backend(), folder / "whitening.zarr")
    return folder, info, p


def preprocessed(folder, info, p, be, name, block=(0, 1), observe=True):
    out = folder / name
    observer = (
        DetectionWhilePreprocessing(folder / "whitening.zarr", THRESHOLD) if observe else None
    )
    preprocess_recording(
        info, folder / "whitening.zarr", p, be, out, block=block, observer=observer
    )
    return out


def read_back(folder, store, be):
    """The detections of the drift stage reading ``store``'s traces back."""
    wg = open_store(folder / "whitening.zarr")
    unwhiten = unwhitening_matrix(wg["whitening"][...], wg["covariance"][...])
    return detect_spikes(PreprocessedReader(store), THRESHOLD, be, unwhiten)


def assert_same_detections(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


# whitening rounds to int16 a little differently on the two backends, so a peak at the threshold
# can be found on one only: the backends are compared by the number of detections
@backends_agree(rtol=0.02)
def test_detections_while_preprocessing_equal_reading_the_traces_back(be, recording):
    folder, info, p = recording
    store = preprocessed(folder, info, p, be, f"whole_{be.name}.zarr")
    made = stored_detections(open_store(store), THRESHOLD, "filtered")
    assert made is not None and made["time"].size > 100  # the units' spikes are found
    assert_same_detections(made, read_back(folder, store, be))
    assert np.all(np.diff(made["time"]) >= 0)
    assert set(np.unique(made["batch"])) <= set(range(13))
    return float(made["time"].size)


@pytest.mark.parametrize("n_blocks", [2, 3, 20])  # 20 blocks of 13 batches: some empty
def test_scattered_blocks_give_the_whole_runs_detections(recording, n_blocks):
    folder, info, p = recording
    whole = preprocessed(folder, info, p, cpu_backend(), "whole_for_blocks.zarr")
    blocks = [
        preprocessed(
            folder, info, p, cpu_backend(), f"b{n_blocks}/preprocessed.{i}.zarr", (i, n_blocks)
        )
        for i in range(n_blocks)
    ]
    gathered = folder / f"gathered{n_blocks}.zarr"
    gather_preprocessed(blocks, gathered, p)
    expected = stored_detections(open_store(whole), THRESHOLD, "filtered")
    assert_same_detections(stored_detections(open_store(gathered), THRESHOLD, "filtered"), expected)


def test_the_drift_stage_uses_them_only_when_made_alike(recording, caplog):
    folder, info, p = recording
    store = preprocessed(folder, info, p, cpu_backend(), "for_drift.zarr")
    plain = preprocessed(folder, info, p, cpu_backend(), "plain.zarr", observe=False)
    assert DETECTIONS_GROUP not in open_store(plain)
    group = open_store(store)
    assert stored_detections(group, THRESHOLD + 1, "filtered") is None  # another threshold
    assert stored_detections(group, THRESHOLD, "whitened") is None  # localised otherwise
    wg = open_store(folder / "whitening.zarr")
    unwhiten = unwhitening_matrix(wg["whitening"][...], wg["covariance"][...])
    pd = resolve({"NT": NT, "spkTh_drift": THRESHOLD})
    with caplog.at_level(logging.INFO, logger="kilosnake"):
        fused = estimate_drift(PreprocessedReader(store), pd, cpu_backend(), unwhiten)
    assert "detections made while preprocessing" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kilosnake"):
        read = estimate_drift(PreprocessedReader(plain), pd, cpu_backend(), unwhiten)
    assert "detections made while preprocessing" not in caplog.text
    np.testing.assert_array_equal(fused.dshift, read.dshift)
    for key in ("time", "channel", "depth", "amplitude", "batch"):
        np.testing.assert_array_equal(fused.spikes[key], read.spikes[key], err_msg=key)
