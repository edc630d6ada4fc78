"""check_input: every bad input named with its fix, good inputs described in input.json."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from inputs import write_noise_recording, write_probe_folder, write_probe_json
from workflow_runs import snakemake

import kilosnake.params as kparams
from kilosnake.errors import InputError
from kilosnake.io.probe import neuropixels_like
from kilosnake.io.recording import RecordingInfo
from kilosnake.io.store import open_store
from kilosnake.preprocess.check_input import (
    channel_count_evidence,
    check_input,
    raw_byte_windows,
    repeat_period,
)
from kilosnake.preprocess.traces import run_preprocess
from kilosnake.preprocess.whitening import run_whitening

NT = 8192
#: samples of the structured recordings: a multiple of 32, so 33-column data also fit 32 columns
STRUCTURED_SAMPLES = 4 * 30000


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    """(samples, 64) int16 of a generated recording: offsets, LFP, correlated noise, spikes."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    folder = tmp_path_factory.mktemp("structured")
    cfg = preset_config("demo", n_channels=64, duration_s=STRUCTURED_SAMPLES / 30000, n_units=8)
    paths = generate(cfg, folder, seed=1)
    return np.fromfile(paths.bin, np.int16).reshape(-1, 64)


def write_columns(folder: Path, x: np.ndarray, name="rec.bin") -> Path:
    path = Path(folder) / name
    np.ascontiguousarray(x).tofile(path)
    return path


def with_sync(x: np.ndarray) -> np.ndarray:
    """``x`` plus a last column carrying a 1 Hz square wave (0 / 64), as Neuropixels files."""
    sync = np.where((np.arange(x.shape[0]) // 15000) % 2, 64, 0).astype(x.dtype)
    return np.concatenate([x, sync[:, None]], axis=1)


def _probe_with(**changes):
    p = neuropixels_like(32)
    for name, fn in changes.items():
        setattr(p, name, fn(getattr(p, name).copy()))
    return p


def _set(i, v):
    def f(a):
        a[i] = v
        return a

    return f


# --------------------------------------------------------------------------------------------
# the bad-input matrix: each case returns check_input's arguments and a phrase of the message


def bad_size(tmp, x):  # one sample short of a whole row
    path = write_noise_recording(tmp)
    with open(path, "ab") as f:
        f.write(b"\0\0")
    return dict(dat=path, probe=write_probe_json(tmp)), "not a multiple"


def channels_off_by_one(tmp, x):  # 32 channels + sync read as 32: the size fits both
    return dict(
        dat=write_columns(tmp, with_sync(x[:, :32])), probe=write_probe_json(tmp)
    ), "probably has 33 channels"


def channels_too_few_by_half(tmp, x):  # 64 channels read as 32
    return dict(dat=write_columns(tmp, x), probe=write_probe_json(tmp)), "probably has 64 channels"


def channels_too_many_by_two(tmp, x):  # 32 channels read as 64: columns repeat
    return dict(
        dat=write_columns(tmp, x[:, :32]), probe=write_probe_json(tmp), n_channels=64
    ), "probably has 32 channels"


def float32_read_as_int16(tmp, x):
    microvolts = x[:, :32].astype(np.float32) * np.float32(2.34)
    return dict(
        dat=write_columns(tmp, microvolts), probe=write_probe_json(tmp)
    ), "looks like float32"


def int16_read_as_float32(tmp, x):
    return dict(
        dat=write_columns(tmp, x[:, :32]), probe=write_probe_json(tmp), dtype="float32"
    ), "does not look like float32"


def uint16_read_as_int16(tmp, x):  # unsigned data centred on 32768 (e.g. Intan)
    unsigned = (x[:, :32].astype(np.int32) + 32768).astype(np.uint16)
    return dict(dat=write_columns(tmp, unsigned), probe=write_probe_json(tmp)), "look like uint16"


def int16_read_as_uint16(tmp, x):
    return dict(
        dat=write_columns(tmp, x[:, :32]), probe=write_probe_json(tmp), dtype="uint16"
    ), "look like int16"


def unsupported_dtype(tmp, x):
    return dict(
        dat=write_noise_recording(tmp), probe=write_probe_json(tmp), dtype="int8"
    ), "not supported"


def index_out_of_range(tmp, x):
    return dict(
        dat=write_noise_recording(tmp),
        probe=write_probe_folder(tmp / "geom", _probe_with(chan_map=_set(0, 40))),
    ), "out of range"


def duplicated_index(tmp, x):
    return dict(
        dat=write_noise_recording(tmp),
        probe=write_probe_folder(tmp / "geom", _probe_with(chan_map=_set(1, 0))),
    ), "twice"


def one_based_map(tmp, x):
    return dict(
        dat=write_noise_recording(tmp),
        probe=write_probe_folder(tmp / "geom", _probe_with(chan_map=lambda a: a + 1)),
    ), "1-based"


def duplicate_positions(tmp, x):
    p = _probe_with(xc=_set(1, 43.0), yc=_set(1, 20.0))
    return dict(
        dat=write_noise_recording(tmp), probe=write_probe_folder(tmp / "geom", p)
    ), "share the position"


def nan_positions(tmp, x):
    return dict(
        dat=write_noise_recording(tmp),
        probe=write_probe_folder(tmp / "geom", _probe_with(yc=_set(3, np.nan))),
    ), "NaN"


def count_mismatch(tmp, x):
    folder = write_probe_folder(tmp / "geom", neuropixels_like(32))
    np.save(folder / "xc.npy", np.load(folder / "xc.npy")[:-2])
    return dict(dat=write_noise_recording(tmp), probe=folder), "differ"


def map_longer_than_positions(tmp, x):  # a 33-entry channel map with 32 contact positions
    path = write_probe_json(tmp)
    doc = json.loads(path.read_text())
    doc["probes"][0]["device_channel_indices"].append(32)
    path.write_text(json.dumps(doc))
    return dict(
        dat=write_noise_recording(tmp, extra_channels=1), probe=path, n_channels=33
    ), "different lengths"


def prb_probe(tmp, x):
    (tmp / "probe.prb").write_text("channel_groups = {0: {'channels': list(range(32))}}\n")
    return dict(dat=write_noise_recording(tmp), probe=tmp / "probe.prb"), "is a .prb file"


def too_short(tmp, x):
    return dict(
        dat=write_noise_recording(tmp, n_samples=NT - 1), probe=write_probe_json(tmp)
    ), "shorter than one batch"


def empty_file(tmp, x):
    (tmp / "rec.bin").write_bytes(b"")
    return dict(dat=tmp / "rec.bin", probe=write_probe_json(tmp)), "empty"


def missing_file(tmp, x):
    return dict(dat=tmp / "nothere.bin", probe=write_probe_json(tmp)), "does not exist"


def folder_as_raw_file(tmp, x):
    (tmp / "rec.bin").mkdir()
    return dict(dat=tmp / "rec.bin", probe=write_probe_json(tmp)), "is a folder"


def missing_probe(tmp, x):
    return dict(dat=write_noise_recording(tmp), probe=None), "no probe"


def every_channel_flat(tmp, x):
    return dict(
        dat=write_columns(tmp, np.zeros((2 * NT, 32), np.int16)), probe=write_probe_json(tmp)
    ), "every channel of the probe is flat"


BAD_INPUTS = [
    bad_size,
    channels_off_by_one,
    channels_too_few_by_half,
    channels_too_many_by_two,
    float32_read_as_int16,
    int16_read_as_float32,
    uint16_read_as_int16,
    int16_read_as_uint16,
    unsupported_dtype,
    index_out_of_range,
    duplicated_index,
    one_based_map,
    duplicate_positions,
    nan_positions,
    count_mismatch,
    map_longer_than_positions,
    prb_probe,
    too_short,
    empty_file,
    missing_file,
    folder_as_raw_file,
    missing_probe,
    every_channel_flat,
]


def run_check(args: dict, out=None) -> dict:
    return check_input(
        args["dat"],
        args["probe"],
        n_channels=args.get("n_channels", 32),
        dtype=args.get("dtype", "int16"),
        NT=NT,
        out=out,
    )


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.__name__)
def test_bad_input_is_named_with_its_fix(tmp_path, structured, case):
    args, message = case(tmp_path, structured)
    out = tmp_path / "input.json"
    with pytest.raises(InputError, match=message) as err:
        run_check(args, out)
    assert "fix:" in str(err.value)
    assert not out.exists() and not (tmp_path / "input.json.tmp").exists()


def test_prb_probe_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    (tmp_path / "probe.prb").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(InputError, match="does not execute probe files"):
        check_input(write_noise_recording(tmp_path), tmp_path / "probe.prb", n_channels=32, NT=NT)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# good inputs pass, whatever their structure


def good_int16(x):
    return x[:, :32], {}


def good_with_sync(x):
    return with_sync(x[:, :32]), {"n_channels": 33}


def good_64_channels(x):
    return x, {"n_channels": 64, "probe": neuropixels_like(64)}


def good_float32(x):
    return x[:, :32].astype(np.float32) * np.float32(2.34), {"dtype": "float32"}


def good_uint16(x):
    return (x[:, :32].astype(np.int32) + 32768).astype(np.uint16), {"dtype": "uint16"}


def good_without_offsets(x):  # offsets removed: neighbouring channels alike, no column tell
    y = x[:, :32].astype(np.float64)
    return (y - np.median(y, axis=0)).astype(np.int16), {}


def good_periodic_offsets(x):  # 64 distinct channels whose offsets repeat every 32 columns
    y = x.astype(np.float64)
    offsets = np.tile(np.random.default_rng(0).normal(0, 50, 32), 2)
    return (y - np.median(y, axis=0) + offsets).astype(np.int16), {
        "n_channels": 64,
        "probe": neuropixels_like(64),
    }


def good_white_noise(x):  # no structure at all: nothing to check, nothing refused
    rng = np.random.default_rng(0)
    return rng.normal(100, 10, (x.shape[0], 32)).astype(np.int16), {}


GOOD_INPUTS = [
    good_int16,
    good_with_sync,
    good_64_channels,
    good_float32,
    good_uint16,
    good_without_offsets,
    good_periodic_offsets,
    good_white_noise,
]


@pytest.mark.parametrize("case", GOOD_INPUTS, ids=lambda c: c.__name__)
def test_good_input_passes(tmp_path, structured, case):
    data, args = case(structured)
    probe = args.pop("probe", None)
    report = run_check(
        {"dat": write_columns(tmp_path, data), "probe": write_probe_json(tmp_path, probe), **args}
    )
    assert report["excluded_channels"] == []
    assert report["n_samples"] == data.shape[0]


@pytest.mark.parametrize("true_count,given", [(33, 32), (64, 32), (32, 33), (64, 128)])
def test_the_smoothest_lag_is_the_true_channel_count(tmp_path, structured, true_count, given):
    data = with_sync(structured[:, :32]) if true_count == 33 else structured[:, :true_count]
    path = write_columns(tmp_path, data[: data.shape[0] // 33 * 33])
    evidence = channel_count_evidence(
        raw_byte_windows(RecordingInfo(str(path), given)), RecordingInfo(str(path), given)
    )
    assert evidence["likely"] == true_count
    assert evidence["roughness"][true_count] == pytest.approx(evidence["best"], rel=0.2)


def test_repeating_columns_are_told_from_smooth_profiles():
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 50, 32)
    assert repeat_period(np.tile(offsets, 2) + rng.normal(0, 0.3, 64))[0] == 32
    assert repeat_period(np.linspace(0, 500, 64)) is None  # a smooth depth profile
    assert repeat_period(rng.normal(0, 50, 64)) is None
    assert repeat_period(np.full(64, 7.0)) is None


# --------------------------------------------------------------------------------------------
# unsigned data


def test_uint16_recording_preprocesses_like_its_int16_twin(tmp_path, structured):
    p = kparams.resolve({"NT": NT, "device": "cpu", "nSkipCov": 1})
    traces = []
    for name, data, dtype in (
        ("signed", structured[:, :32], "int16"),
        ("unsigned", (structured[:, :32].astype(np.int32) + 32768).astype(np.uint16), "uint16"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        report = check_input(
            write_columns(folder, data),
            write_probe_json(folder),
            n_channels=32,
            dtype=dtype,
            NT=NT,
            out=folder / "input.json",
        )
        assert report["dtype"] == dtype and report["excluded_channels"] == []
        run_whitening(folder / "input.json", p, folder / "whitening.zarr")
        run_preprocess(
            folder / "input.json", folder / "whitening.zarr", p, folder / "preprocessed.zarr"
        )
        traces.append(open_store(folder / "preprocessed.zarr")["traces"][...])
    np.testing.assert_array_equal(traces[0], traces[1])
    assert traces[0].std() > 50


# --------------------------------------------------------------------------------------------
# flat and saturated channels


def recording_with_bad_rows(folder: Path) -> Path:
    """Noise on 32 rows; row 5 all zero, row 9 stuck at the rail, row 12 clipped 3 % of the time."""
    path = write_noise_recording(folder, n_samples=3 * NT)
    x = np.fromfile(path, np.int16).reshape(-1, 32)
    x[:, 5] = 0
    x[:, 9] = 32767
    x[::33, 12] = -32768
    x.tofile(path)
    return path


def test_flat_and_saturated_channels_are_excluded(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kilosnake"):
        report = check_input(
            recording_with_bad_rows(tmp_path),
            write_probe_json(tmp_path),
            n_channels=32,
            NT=NT,
            out=tmp_path / "input.json",
        )
    assert [(c["row"], c["reason"]) for c in report["excluded_channels"]] == [
        (5, "flat"),
        (9, "saturated"),
    ]
    rows = [r for r in range(32) if r not in (5, 9)]
    assert report["probe"]["chan_map"] == rows
    assert (
        len(report["probe"]["xc"]) == len(report["rms"]) == len(report["saturation_fraction"]) == 30
    )
    assert report["saturation_fraction"][rows.index(12)] == pytest.approx(1 / 33, rel=0.1)
    assert "row 5) is flat" in caplog.text and "row 9) is saturated" in caplog.text
    assert "row 12) is saturated in 3.0% of samples (kept)" in caplog.text
    assert json.loads((tmp_path / "input.json").read_text()) == report


def test_later_stages_use_the_probe_without_excluded_channels(tmp_path):
    check_input(
        recording_with_bad_rows(tmp_path),
        write_probe_json(tmp_path),
        n_channels=32,
        NT=NT,
        out=tmp_path / "input.json",
    )
    p = kparams.resolve({"NT": NT, "device": "cpu"})
    run_whitening(tmp_path / "input.json", p, tmp_path / "whitening.zarr")
    run_preprocess(
        tmp_path / "input.json", tmp_path / "whitening.zarr", p, tmp_path / "preprocessed.zarr"
    )
    rows = [r for r in range(32) if r not in (5, 9)]
    for store in ("whitening.zarr", "preprocessed.zarr"):
        g = open_store(tmp_path / store)
        np.testing.assert_array_equal(g["chan_map"][...], rows)
    assert open_store(tmp_path / "whitening.zarr")["whitening"].shape == (30, 30)
    assert open_store(tmp_path / "preprocessed.zarr")["traces"].shape == (3 * NT, 30)


# --------------------------------------------------------------------------------------------
# other good inputs


def test_good_input_is_described(tmp_path):
    dat = write_noise_recording(tmp_path, n_samples=3 * NT, extra_channels=1)
    report = check_input(
        dat, write_probe_json(tmp_path), n_channels=33, NT=NT, out=tmp_path / "input.json"
    )
    on_disk = json.loads((tmp_path / "input.json").read_text())
    assert on_disk == report
    assert report["n_samples"] == 3 * NT and report["n_batches"] == 3
    assert report["n_channels_total"] == 33 and len(report["rms"]) == 32
    assert 9 < np.median(report["rms"]) < 11
    assert max(report["saturation_fraction"]) == 0


def test_spikeglx_meta_fills_channels_rate_and_gain(tmp_path):
    dat = write_noise_recording(tmp_path, n_samples=2 * NT, extra_channels=1)
    (tmp_path / "rec.meta").write_text(
        "nSavedChans=33\nimSampRate=30000.5\nimAiRangeMax=0.6\nimMaxInt=512\n"
        "~imroTbl=(0,384)(0 0 0 500 250 1)(1 0 0 500 250 1)\n"
    )
    report = check_input(dat, write_probe_json(tmp_path), NT=NT)
    assert report["n_channels_total"] == 33 and report["sample_rate"] == 30000.5
    assert report["uv_per_bit"] == pytest.approx(0.6 / 512 / 500 * 1e6)


# --------------------------------------------------------------------------------------------
# in the workflow: stopped by check_input (or the config schema) before any heavy work


def run_workflow(workdir: Path, *config: str, target="results/rec/input.json"):
    """Run the workflow towards ``target``, expected to stop early (the result is checked by the
    caller)."""
    return snakemake(workdir, target, config=config, cores=1, check=False, timeout=300)


def assert_no_outputs(workdir: Path):
    results = workdir / "results"
    outputs = [
        p
        for p in results.rglob("*")  # the run summary names the failure: allowed
        if p.is_file()
        and p.parent.name not in ("logs", "benchmarks")
        and p != results / "summary.tsv"
    ]
    assert outputs == [] and not list(results.rglob("*.zarr*"))


@pytest.mark.parametrize(
    "case",
    [bad_size, channels_off_by_one, float32_read_as_int16, one_based_map, too_short, missing_probe],
    ids=lambda c: c.__name__,
)
def test_workflow_stops_before_heavy_work(tmp_path, structured, case):
    args, message = case(tmp_path, structured)
    config = [
        f"dat={args['dat']}",
        f"n_channels={args.get('n_channels', 32)}",
        f"NT={NT}",
        f"dtype={args.get('dtype', 'int16')}",
    ]
    if args["probe"] is not None:
        config.append(f"probe={args['probe']}")
    result = run_workflow(tmp_path, *config, target="results/rec/preprocessed.zarr")
    assert result.returncode != 0
    log = (tmp_path / "results/rec/logs/check_input.log").read_text()
    assert message in log and "fix:" in log
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize(
    "setting,problem,fix",
    [
        (
            "fshigh=abc",
            "fshigh='abc' is not allowed: 'abc' is not of type 'number' (allowed: a number >= 1",
            "set fshigh to a number >= 1 in config/config.yaml or with --config "
            "fshigh=<value> (the default is 300.0)",
        ),
        (
            "NT=10",
            "NT=10 is not allowed: 10 is less than the minimum of 4096 (allowed: an integer "
            ">= 4096; samples)",
            "set NT to an integer >= 4096",
        ),
        (
            "dtype=int8",
            "dtype='int8' is not allowed: 'int8' is not one of",
            "set dtype to one of 'int16', 'uint16', 'int32', 'float32'",
        ),
        (
            "Th=[10]",
            "Th=[10] is not allowed: [10] is too short (allowed: a pair [a, b] of numbers",
            "set Th to a pair [a, b] of numbers >= 0 in config/config.yaml or with --config "
            "Th=<value> (the default is [10.0,4.0])",
        ),
        ("fslow=abc", "fslow='abc' is not allowed", "set fslow to a number >= 1, or null"),
        (
            "Th=[8,3",
            "config value Th='[8,3' is not allowed: it is not valid YAML (expected ',' or ']'",
            "set Th to a pair [a, b] of numbers >= 0",
        ),
        (
            "no_such_key=1",
            "config key 'no_such_key' is unknown",
            "remove 'no_such_key' from the config",
        ),
        (
            "NTT=4096",
            "config key 'NTT' is unknown (did you mean NT?)",
            "remove 'NTT' from the config (config/config.yaml or --config) or correct its name",
        ),
    ],
)
def test_config_of_the_wrong_type_or_range_is_refused(tmp_path, setting, problem, fix):
    dat = write_noise_recording(tmp_path, n_samples=2 * NT)
    result = run_workflow(
        tmp_path, f"dat={dat}", f"probe={write_probe_json(tmp_path)}", "n_channels=32", setting
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # Snakemake may wrap long lines
    assert "InputError" in message and problem in message and f"fix: {fix}" in message, (
        result.stderr[-2000:]
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32"])
def test_channel_rms_and_medians_equal_the_row_by_row_float64_values(dtype):
    from kilosnake.preprocess.check_input import rms_about, row_medians

    rng = np.random.default_rng(3)
    rows = rng.normal(1000, 40, (70, 6001)).astype(dtype)
    rows[3, :] = rows[3, 0]  # a flat channel: RMS 0
    medians = row_medians(rows)
    np.testing.assert_array_equal(medians, np.median(rows, axis=1))
    expected = [np.sqrt(np.mean((r.astype(np.float64) - m) ** 2)) for r, m in zip(rows, medians)]
    np.testing.assert_allclose(rms_about(rows, medians), expected, rtol=1e-12)
    assert rms_about(rows, medians)[3] == 0
