"""Progress lines of long loops and the opening and closing lines of stage logs."""

import io
import json
import logging
import re

import numpy as np
import pytest

from kilosnake.io.store import write_array, writing_store
from kilosnake.io.traces import create_traces
from kilosnake.runtime import logs
from kilosnake.runtime.progress import Progress, eta_seconds, format_duration, format_rate

LINE = re.compile(
    r"^(?P<label>.+): batch (?P<i>\d+)/(?P<n>\d+) \((?P<pct>\d+)%\), (?P<rate>.+), "
    r"elapsed (?P<elapsed>.+), ETA (?P<eta>.+?)(; (?P<extra>.*))?$"
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def records():
    """Log records of the test logger."""
    log = logging.getLogger("kilosnake.test_progress")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield log, stream
    log.removeHandler(handler)


def lines_of(stream):
    return [line for line in stream.getvalue().splitlines() if line]


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0 s"),
        (42.4, "42 s"),
        (59.6, "1 min 0 s"),
        (185, "3 min 5 s"),
        (7440, "2 h 04 min"),
        (float("nan"), "?"),
        (-1, "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_rate_switches_to_seconds_per_step_for_slow_loops():
    assert format_rate(10, 4.0, "batch") == "2.50 batch/s"
    assert format_rate(2, 25.0, "batch") == "12.5 s/batch"
    assert format_rate(0, 0.0, "batch") == "? batch/s"


def test_eta_is_the_remaining_steps_at_the_mean_rate():
    assert eta_seconds(10, 40, 20.0) == pytest.approx(60.0)
    assert np.isnan(eta_seconds(0, 40, 0.0))


def test_lines_on_the_first_step_every_ten_seconds_and_the_last(records):
    log, stream = records
    clock = FakeClock()
    p = Progress(100, "learn", log, clock=clock, bar=False)
    for _ in range(100):
        clock.now += 1.0  # one batch per second
        p.update(templates=7)
    p.close()
    found = [LINE.match(line) for line in lines_of(stream)]
    assert all(found), lines_of(stream)
    steps = [int(m["i"]) for m in found]
    assert steps == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]
    tenth = found[2]
    assert tenth["label"] == "learn" and tenth["n"] == "100" and tenth["pct"] == "21"
    assert tenth["rate"] == "1.00 batch/s"
    assert tenth["eta"] == "1 min 19 s"  # 79 batches left at 1 batch/s
    assert tenth["extra"] == "7 templates"
    assert found[-1]["eta"] == "0 s"


def test_every_n_steps_adds_lines_between_the_timed_ones(records):
    log, stream = records
    clock = FakeClock()
    p = Progress(20, "drift detection", log, every_n=5, clock=clock, bar=False)
    for _ in range(20):
        clock.now += 0.01
        p.update(spikes=3)
    assert [int(LINE.match(s)["i"]) for s in lines_of(stream)] == [1, 5, 10, 15, 20]
    assert p.lines == 5


def test_no_bar_when_stderr_is_not_a_terminal(records, capsys):
    log, _ = records
    p = Progress(3, "preprocess", log)  # pytest captures stderr: not a terminal
    assert p._bar is None
    for _ in range(3):
        p.update()
    p.close()
    assert "preprocess" not in capsys.readouterr().err


def test_a_bar_keeps_the_log_lines_complete(tmp_path):
    log_file = tmp_path / "stage.log"
    handler = logs.add_default_handler("INFO", log_file)
    try:
        with Progress(4, "final pass", logging.getLogger("kilosnake.final"), bar=True) as p:
            assert p._bar is not None
            for _ in range(4):
                p.update(spikes=10)
    finally:
        logging.getLogger("kilosnake").removeHandler(handler)
        handler.close()
    text = log_file.read_text()
    assert "final pass: batch 4/4 (100%)" in text and "ETA 0 s; 10 spikes" in text
    assert "it/s" not in text and "\r" not in text  # the bar never reaches the file


def make_store(path):
    with writing_store(path, "preprocess") as g:
        create_traces(g, 1000, 8, NT=1000)
        write_array(g, "xc", np.zeros(8))


def test_describe_input(tmp_path):
    make_store(tmp_path / "preprocessed.zarr")
    (tmp_path / "input.json").write_text(
        json.dumps(
            {
                "n_samples": 900000,
                "duration_s": 30.0,
                "n_channels_total": 385,
                "probe": {"chan_map": list(range(384))},
            }
        )
    )
    (tmp_path / "rec.bin").write_bytes(b"\0" * 2_000_000)
    assert (
        logs.describe_input(tmp_path / "preprocessed.zarr")
        == "preprocessed.zarr: traces (1000, 8) int16, 2 arrays"
    )
    assert (
        logs.describe_input(tmp_path / "input.json")
        == "input.json: 900000 samples (30.0 s) x 385 channels (384 on the probe)"
    )
    assert logs.describe_input(tmp_path / "rec.bin") == "rec.bin: 2.0 MB"
    assert logs.describe_input(tmp_path / "small.txt").endswith("missing")
    (tmp_path / "small.txt").write_text("x" * 1500)
    assert logs.describe_input(tmp_path / "small.txt") == "small.txt: 1.5 kB"
    (tmp_path / "broken.zarr").mkdir()
    assert "broken.zarr: not described" in logs.describe_input(tmp_path / "broken.zarr")


def test_stage_log_opens_with_parameters_version_device_inputs_and_closes_with_resources(tmp_path):
    make_store(tmp_path / "preprocessed.zarr")
    log_file = tmp_path / "logs" / "learn.log"
    log_file.parent.mkdir()
    with logs.stage_logging(
        log_file, "learn", {"device": "cpu", "Th": [10, 4]}, inputs=[tmp_path / "preprocessed.zarr"]
    ) as log:
        clock = FakeClock()
        p = Progress(2, "learn", log, clock=clock, bar=False)
        for _ in range(2):
            clock.now += 3.0
            p.update()
    lines = log_file.read_text().splitlines()
    assert "non-default parameters: device='cpu'" in lines[0]
    assert re.search(
        r"kilosnake \S+, stage learn, Python \S+, host .*, device asked: cpu", lines[1]
    )
    assert "input preprocessed.zarr: traces (1000, 8) int16" in lines[2]
    assert any("learn: batch 2/2 (100%), 3.0 s/batch, elapsed 6 s, ETA 0 s" in s for s in lines)
    assert re.search(
        r"learn done in [\d.]+ s \(CPU [\d.]+ s\), peak host memory \d+ MB$", lines[-1]
    )


def test_expected_error_is_one_line_and_exit_status_1(tmp_path):
    from kilosnake.errors import KilosnakeError

    log_file = tmp_path / "x.log"
    with pytest.raises(SystemExit) as exc:
        with logs.stage_logging(log_file, "drift", {}, inputs=[]):
            raise KilosnakeError("no spikes")
    assert exc.value.code == 1
    assert log_file.read_text().splitlines()[-1].endswith("drift failed: no spikes")


def test_gpu_peak_is_none_without_cupy(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    logs.sample_gpu_memory()
    assert logs.peak_gpu_memory_mb() is None


def test_gpu_peak_keeps_the_largest_pool_size_seen(monkeypatch):
    import sys
    import types

    sizes = iter([300e6, 100e6])
    pool = types.SimpleNamespace(total_bytes=lambda: next(sizes))
    fake = types.SimpleNamespace(get_default_memory_pool=lambda: pool)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    logs._reset_gpu_peak()
    logs.sample_gpu_memory()  # 300 MB while a stage runs
    assert logs.peak_gpu_memory_mb() == pytest.approx(300.0)  # pool shrank to 100 MB since


def test_third_party_loggers_are_quiet(tmp_path):
    handler = logs.add_default_handler("INFO", tmp_path / "a.log")
    logging.getLogger("kilosnake").removeHandler(handler)
    handler.close()
    for name in ("zarr", "numcodecs", "matplotlib", "PIL", "numba", "fsspec"):
        assert logging.getLogger(name).level == logging.WARNING


def test_the_console_shows_start_end_warnings_and_errors_only(tmp_path, capsys):
    log_file = tmp_path / "learn.log"
    with logs.stage_logging(log_file, "learn", {}, inputs=[]) as log:
        log.info("batch 3 of 9: details for the log file")
        log.warning("something the user should see")
    console = capsys.readouterr().err
    assert f"learn started (log: {log_file})" in console and "learn done in" in console
    assert "something the user should see" in console
    assert "details" not in console and "non-default parameters" not in console
    assert "details for the log file" in log_file.read_text()
    with pytest.raises(SystemExit):
        with logs.stage_logging(log_file, "learn", {}, inputs=[]):
            from kilosnake.errors import KilosnakeError

            raise KilosnakeError("the reason")
    assert "learn failed: the reason" in capsys.readouterr().err


def test_describing_a_store_with_snakemake_timestamp_gives_no_warning(tmp_path):
    import warnings

    make_store(tmp_path / "spikes.zarr")
    (tmp_path / "spikes.zarr" / ".snakemake_timestamp").write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = logs.describe_input(tmp_path / "spikes.zarr")
    assert "traces (1000, 8) int16" in text
    assert [str(w.message) for w in caught] == []
