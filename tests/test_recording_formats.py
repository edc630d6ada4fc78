"""``--config recording=... format=... stream=...``: a recording SpikeInterface reads, described
for the workflow while it is read (kilosnake.io.formats, kilosnake.workflow.recordings).

A flat binary behind the recording (SpikeGLX .bin, a SpikeInterface binary folder) is the raw
file itself; any other is to be written once under results/; a bad format, a missing or unknown
stream, or a missing SpikeInterface is refused with the choices named.
"""

import json
import sys

import numpy as np
import pytest

si = pytest.importorskip("spikeinterface.core")

from spikeglx_meta import four_shank_layout, np1_meta, np2_meta, write_meta  # noqa: E402

from kilosnake.errors import InputError  # noqa: E402
from kilosnake.io import formats  # noqa: E402
from kilosnake.io.probe import load_probe  # noqa: E402
from kilosnake.workflow.config_check import check_config, coerced_config  # noqa: E402
from kilosnake.workflow.recordings import (  # noqa: E402
    convert_recording,
    recording_sources,
    shank_counts,
    write_recording_probe,
)

N_SAMPLES = 30000


def spikeglx_run(tmp_path, probes=(0,), meta=None, n_columns=33):
    """``tmp_path/run_g0`` with one AP .bin + .meta per imec probe."""
    for k in probes:
        folder = tmp_path / "run_g0" / f"run_g0_imec{k}"
        folder.mkdir(parents=True)
        bin_path = folder / f"run_g0_t0.imec{k}.ap.bin"
        rng = np.random.default_rng(k)
        rng.integers(-50, 50, (N_SAMPLES, n_columns)).astype(np.int16).tofile(bin_path)
        text = meta or np1_meta(range(32), n_samples=N_SAMPLES)
        write_meta(bin_path, text.replace("imec0", f"imec{k}"))
    return tmp_path / "run_g0"


def only(sources: dict):
    (name, rec), = sources.items()  # fmt: skip
    return name, rec


def test_spikeglx_folder_is_read_in_place(tmp_path):
    folder = spikeglx_run(tmp_path)
    name, rec = only(recording_sources({"recording": str(folder), "format": "spikeglx"}))
    bin_path = folder / "run_g0_imec0" / "run_g0_t0.imec0.ap.bin"
    assert name == "run_g0_imec0.ap"  # the only neural stream (imec0.ap-SYNC is not)
    assert rec["dat"] == str(bin_path.resolve())
    assert (rec["n_channels"], rec["dtype"], rec["sample_rate"]) == (33, "int16", 30000.0)
    assert rec["uv_per_bit"] == pytest.approx(2.34375)
    assert rec["made"] == [f"results/{name}/probe.json"]  # the probe only: no copy
    assert rec["source"] == {"recording": str(folder), "format": "spikeglx", "stream": "imec0.ap"}

    out = tmp_path / "probe.json"
    write_recording_probe(rec["source"], out)
    probe = load_probe(out)
    assert probe.chan_map.tolist() == list(range(32))  # file columns; the sync column is left out
    assert np.unique(probe.yc).size == 16


def test_four_shank_probe_counts_its_shanks_before_its_probe_file_exists(tmp_path):
    folder = spikeglx_run(
        tmp_path, meta=np2_meta(range(32), *four_shank_layout(8), n_samples=N_SAMPLES)
    )
    sources = recording_sources({"recording": str(folder), "format": "spikeglx"})
    assert shank_counts(sources) == {"run_g0_imec0.ap": 4}


def test_several_streams_need_stream(tmp_path):
    folder = spikeglx_run(tmp_path, probes=(0, 1))
    with pytest.raises(InputError, match="several streams: imec0.ap, imec1.ap") as err:
        recording_sources({"recording": str(folder), "format": "spikeglx"})
    assert "--config stream=" in err.value.fix
    with pytest.raises(InputError, match="no stream 'imec2.ap'; its streams are: imec0.ap"):
        recording_sources({"recording": str(folder), "format": "spikeglx", "stream": "imec2.ap"})
    name, rec = only(
        recording_sources({"recording": str(folder), "format": "spikeglx", "stream": "imec1.ap"})
    )
    assert name == "run_g0_imec1.ap" and rec["dat"].endswith("run_g0_t0.imec1.ap.bin")


def ground_truth_folder(tmp_path):
    recording, _ = si.generate_ground_truth_recording(
        durations=[3.0], num_channels=16, num_units=4, seed=1
    )
    return recording.save(folder=tmp_path / "gt_bin", n_jobs=1, progress_bar=False)


def test_spikeinterface_binary_folder_is_read_in_place(tmp_path):
    ground_truth_folder(tmp_path)
    name, rec = only(
        recording_sources({"recording": str(tmp_path / "gt_bin"), "format": "spikeinterface"})
    )
    assert name == "gt_bin"
    assert rec["dat"] == str((tmp_path / "gt_bin" / "traces_cached_seg0.raw").resolve())
    assert (rec["dtype"], rec["n_channels"]) == ("float32", 16)


def test_computed_recording_is_written_once_as_int16(tmp_path):
    saved = ground_truth_folder(tmp_path)
    subset = saved.select_channels(saved.channel_ids[:12])  # computed: no flat binary
    subset.dump_to_json(tmp_path / "subset.json")
    name, rec = only(
        recording_sources({"recording": str(tmp_path / "subset.json"), "format": "spikeinterface"})
    )
    assert name == "subset"
    assert rec["dat"] == "results/subset/recording.dat"
    assert rec["made"] == ["results/subset/recording.dat", "results/subset/probe.json"]
    assert (rec["dtype"], rec["n_channels"]) == ("int16", 12)

    out = tmp_path / "recording.dat"
    convert_recording(rec["source"], out)
    data = np.fromfile(out, np.int16).reshape(-1, 12)
    step = rec["uv_per_bit"]  # gains of 1: the traces are in µV
    np.testing.assert_allclose(data * step, subset.get_traces(), atol=step)
    noise = np.median(np.abs(data - np.median(data, 0))) / 0.6745
    assert 5 < noise < 20  # about ten steps
    assert not (tmp_path / "recording.dat.partial").exists()


def test_unsigned_traces_are_shifted_exactly():
    x = np.array([[0, 32768, 65535], [1, 2, 3]], dtype=np.uint16)
    recording = si.NumpyRecording([x], 30000.0)
    shift, step = formats.int16_mapping(recording)
    y = formats.to_int16(x, shift, step)
    np.testing.assert_array_equal(y.astype(np.int64), x.astype(np.int64) - 32768)


def test_recording_without_probe_names_probe(tmp_path):
    recording = si.NumpyRecording([np.zeros((1000, 4), np.float32)], 30000.0)
    recording.save(folder=tmp_path / "noprobe", progress_bar=False)
    with pytest.raises(InputError, match="has no probe") as err:
        recording_sources({"recording": str(tmp_path / "noprobe"), "format": "spikeinterface"})
    assert "probe=" in err.value.fix


def test_missing_spikeinterface_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spikeinterface.extractors", None)
    folder = spikeglx_run(tmp_path)
    with pytest.raises(InputError, match="needs SpikeInterface") as err:
        recording_sources({"recording": str(folder), "format": "spikeglx"})
    assert "kilosnake[spikeinterface]" in err.value.fix


@pytest.mark.parametrize(
    "config, message",
    [
        ({"format": "spikeglx"}, "format given without recording"),
        ({"recording": "x", "dat": "a.bin", "format": "nwb"}, "both name what to sort"),
        ({"recording": "x"}, "without its format"),
        ({"recording": "x", "format": "spikegl"}, "one of 'spikeglx', 'openephys', 'nwb'"),
    ],
)
def test_config_combinations_are_refused_with_the_fix(config, message):
    with pytest.raises(InputError, match=message):
        check_config(coerced_config(config))


def test_missing_recording_is_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        recording_sources({"recording": str(tmp_path / "nothing"), "format": "openephys"})


def write_nwb(recording, path, uv_per_bit=0.195):
    """An NWB file holding ``recording`` as int16 with its contact positions (pynwb)."""
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    nwb = NWBFile(session_description="test", identifier="test", session_start_time=start)
    group = nwb.create_electrode_group(
        name="shank0", description="", location="brain", device=nwb.create_device(name="probe")
    )
    nwb.add_electrode_column(name="rel_x", description="x (um)")
    nwb.add_electrode_column(name="rel_y", description="y (um)")
    for x, y in recording.get_channel_locations():
        nwb.add_electrode(group=group, location="brain", rel_x=float(x), rel_y=float(y))
    region = nwb.create_electrode_table_region(list(range(recording.get_num_channels())), "all")
    data = np.rint(recording.get_traces() / uv_per_bit).astype(np.int16)
    series = ElectricalSeries(
        name="ElectricalSeries",
        data=data,
        electrodes=region,
        rate=recording.get_sampling_frequency(),
        conversion=uv_per_bit * 1e-6,
    )
    nwb.add_acquisition(series)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return data


def test_nwb_file_is_written_once_exactly(tmp_path):
    pytest.importorskip("pynwb")
    path = tmp_path / "session.nwb"
    data = write_nwb(ground_truth_folder(tmp_path), path)
    name, rec = only(recording_sources({"recording": str(path), "format": "nwb"}))
    assert name == "session" and rec["dat"] == "results/session/recording.dat"
    assert rec["uv_per_bit"] == pytest.approx(0.195)
    out = tmp_path / "recording.dat"
    convert_recording(rec["source"], out)
    np.testing.assert_array_equal(np.fromfile(out, np.int16).reshape(data.shape), data)


def test_probe_file_of_a_recording_round_trips(tmp_path):
    folder = spikeglx_run(tmp_path)
    _, rec = only(recording_sources({"recording": str(folder), "format": "spikeglx"}))
    out = tmp_path / "probe.json"
    write_recording_probe(rec["source"], out)
    assert json.loads(out.read_text())["specification"] == "probeinterface"


def open_ephys_session(folder, n_samples=N_SAMPLES, n_channels=8):
    """An Open Ephys binary session (GUI 0.6 layout: structure.oebin, continuous.dat, sample
    numbers) of one 8-channel stream, without settings.xml (so without a probe)."""
    root = folder / "Record Node 101" / "experiment1" / "recording1"
    stream = root / "continuous" / "Neuropix-PXI-100.ProbeA-AP"
    stream.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rng.integers(-100, 100, (n_samples, n_channels)).astype(np.int16).tofile(
        stream / "continuous.dat"
    )
    np.save(stream / "sample_numbers.npy", np.arange(n_samples, dtype=np.int64))
    np.save(stream / "timestamps.npy", np.arange(n_samples) / 30000.0)
    channels = [
        {"channel_name": f"AP{i + 1}", "description": "", "identifier": "", "history": "",
         "bit_volts": 0.195, "units": "uV"}
        for i in range(n_channels)
    ]  # fmt: skip
    oebin = {
        "GUI version": "0.6.7",
        "continuous": [
            {"folder_name": "Neuropix-PXI-100.ProbeA-AP/", "sample_rate": 30000.0,
             "source_processor_name": "Neuropix-PXI", "source_processor_id": 100,
             "stream_name": "ProbeA-AP", "recorded_processor": "Neuropix-PXI",
             "recorded_processor_id": 100, "num_channels": n_channels, "channels": channels}
        ],
        "events": [],
        "spikes": [],
    }  # fmt: skip
    (root / "structure.oebin").write_text(json.dumps(oebin))
    return stream / "continuous.dat"


def test_open_ephys_continuous_dat_is_read_in_place_with_a_probe_file(tmp_path):
    from kilosnake.io.probe import neuropixels_like, write_probeinterface_json

    dat = open_ephys_session(tmp_path / "session")
    with pytest.raises(InputError, match="has no probe"):  # no settings.xml: no geometry
        recording_sources({"recording": str(tmp_path / "session"), "format": "openephys"})
    probe = tmp_path / "probe.json"
    write_probeinterface_json(neuropixels_like(8, n_shanks=2), probe)
    config = {"recording": str(tmp_path / "session"), "format": "openephys", "probe": str(probe)}
    name, rec = only(recording_sources(config))
    assert name == "session_Record_Node_101_Neuropix-PXI-100.ProbeA-AP"
    assert rec["dat"] == str(dat.resolve()) and rec["made"] == []  # no copy, no probe written
    assert (rec["n_channels"], rec["uv_per_bit"], rec["n_shanks"]) == (8, 0.195, 2)
    by_id = only(recording_sources({**config, "stream": "0"}))  # the stream's id works too
    assert by_id == (name, rec)
