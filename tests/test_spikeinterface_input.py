"""SpikeInterface recordings handed to kilosnake: a flat binary behind them is read in place
(SpikeGLX through Neo, with the sync column left out), others are written once as int16."""

import json

import numpy as np
import pytest

se = pytest.importorskip("spikeinterface.extractors")
si = pytest.importorskip("spikeinterface.core")

from spikeglx_meta import four_shank_layout, np1_meta, np2_meta, write_meta  # noqa: E402

import kilosnake.spikeinterface as ks  # noqa: E402

N_SAMPLES = 60000


def spikeglx_folder(tmp_path, meta_text, n_columns):
    folder = tmp_path / "run_g0" / "run_g0_imec0"
    folder.mkdir(parents=True)
    bin_path = folder / "run_g0_t0.imec0.ap.bin"
    rng = np.random.default_rng(0)
    rng.integers(-50, 50, (N_SAMPLES, n_columns)).astype(np.int16).tofile(bin_path)
    write_meta(bin_path, meta_text)
    return tmp_path / "run_g0", bin_path


def test_spikeglx_through_neo_is_read_in_place(tmp_path):
    folder, bin_path = spikeglx_folder(tmp_path, np1_meta(range(32), n_samples=N_SAMPLES), 33)
    recording = se.read_spikeglx(folder, stream_id="imec0.ap")
    d = ks.prepare_recording(recording, tmp_path / "out")
    assert d["dat"] == str(bin_path.resolve()) and d["n_channels"] == 33
    assert d["probe"]["chanMap"] == list(range(32))  # the sync column is not a channel
    assert d["uv_per_bit"] == pytest.approx(2.34375)
    assert not (tmp_path / "out" / "recording.dat").exists()
    assert json.loads((tmp_path / "out" / ks.INPUT_JSON).read_text())["dat"] == d["dat"]


def test_four_shank_probe_keeps_its_shanks(tmp_path):
    text = np2_meta(range(32), *four_shank_layout(8), n_samples=N_SAMPLES)
    folder, _ = spikeglx_folder(tmp_path, text, 33)
    recording = se.read_spikeglx(folder, stream_id="imec0.ap")
    d = ks.prepare_recording(recording, tmp_path / "out")
    assert sorted(set(d["probe"]["kcoords"])) == [0, 1, 2, 3]


def test_generated_recording_is_written_as_int16(tmp_path):
    recording = si.generate_recording(num_channels=8, durations=[2.0], seed=0)
    d = ks.prepare_recording(recording, tmp_path / "out")
    assert d["dat"] == str((tmp_path / "out" / "recording.dat").resolve())
    assert d["dtype"] == "int16" and d["n_channels"] == 8
    data = np.fromfile(d["dat"], np.int16).reshape(-1, 8)
    original = recording.get_traces()
    step = d["uv_per_bit"]
    np.testing.assert_allclose(data * step, original, atol=step)  # within one step
    noise = np.median(np.abs(data - np.median(data, 0))) / 0.6745
    assert 5 < noise < 20  # about ten steps


def test_recording_without_probe_is_refused(tmp_path):
    recording = si.NumpyRecording([np.zeros((1000, 4), np.float32)], 30000.0)
    with pytest.raises(ValueError, match="probe"):
        ks.prepare_recording(recording, tmp_path / "out")
