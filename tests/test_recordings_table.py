"""Many recordings in one run: the recordings table, and --keep-going with a broken recording."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from kilosnake.workflow.recordings import (
    RecordingsTableError,
    read_recordings_table,
    recording_sources,
)
from kilosnake.workflow.summary import COLUMNS, format_table, recording_status

ROOT = Path(__file__).resolve().parents[1]
HEADER = "name\tdat\tprobe\tn_channels\tsample_rate\tdtype\n"


def write_table(path, *rows, header=HEADER):
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def test_shipped_example_table_is_valid():
    rows = read_recordings_table(ROOT / "config/recordings.tsv")
    assert len(rows) >= 2
    for name, row in rows.items():
        assert row["name"] == name and row["dat"] and isinstance(row["n_channels"], int)


def test_rows_become_recordings_and_empty_cells_take_the_config(tmp_path):
    table = write_table(
        tmp_path / "r.tsv",
        ("a", "a.bin", "p.json", 385, 30000, "int16"),
        ("007", "b.bin", "", "", 25000.5, ""),
    )
    config = {
        "recordings": str(table),
        "probe": "shared.json",
        "n_channels": 64,
        "dtype": "int16",
        "sample_rate": None,
        "uv_per_bit": 2.34,
        "dat": "ignored.bin",
    }
    recs = recording_sources(config)
    assert list(recs) == ["a", "007"]
    assert recs["a"] == {
        "dat": "a.bin",
        "probe": "p.json",
        "n_channels": 385,
        "dtype": "int16",
        "sample_rate": 30000,
        "uv_per_bit": 2.34,
        "gt": None,
        "demo": None,
    }
    assert recs["007"]["probe"] == "shared.json" and recs["007"]["n_channels"] == 64
    assert recs["007"]["sample_rate"] == 25000.5 and recs["007"]["dtype"] == "int16"


def test_comments_and_blank_lines_are_skipped(tmp_path):
    table = tmp_path / "r.tsv"
    table.write_text("# my recordings\n\n" + HEADER + "# off for now\nx\tx.bin\t\t\t\t\n")
    assert list(read_recordings_table(table)) == ["x"]


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([("a", "a.bin", "", "", "", "")], "name\tprobe\n", "missing column"),
        ([("a", "a.bin")], "name\tdat\tgain\n", "unknown column"),
        ([("a", "a.bin", "", "", "", ""), ("a", "b.bin", "", "", "", "")], HEADER, "used twice"),
        ([("a", "a.bin", "", "", "", "int8")], HEADER, "row 2, dtype"),
        ([("a", "a.bin", "", "0", "", "")], HEADER, "row 2, n_channels"),
        ([("a", "a.bin", "", "3.5", "", "")], HEADER, "row 2, n_channels"),
        ([("a/b", "a.bin", "", "", "", "")], HEADER, "name"),
        ([("", "a.bin", "", "", "", "")], HEADER, "'name' is a required property"),
        ([("a", "a.bin", "", "", "", "", "extra")], HEADER, "more cells than columns"),
        ([], HEADER, "no recordings"),
    ],
)
def test_bad_tables_are_refused_with_row_and_column(tmp_path, rows, header, message):
    table = write_table(tmp_path / "r.tsv", *rows, header=header)
    with pytest.raises(RecordingsTableError, match=message):
        read_recordings_table(table)


def test_missing_table_is_named(tmp_path):
    with pytest.raises(RecordingsTableError, match="not found"):
        recording_sources({"recordings": str(tmp_path / "nope.tsv")})


def test_summary_reads_stage_outputs_and_logs(tmp_path):
    (tmp_path / "a/phy").mkdir(parents=True)
    (tmp_path / "a/phy/params.py").write_text("dat_path = 'x'\n")
    (tmp_path / "b/logs").mkdir(parents=True)
    (tmp_path / "b/input.json").write_text("{}")
    (tmp_path / "b/logs/whitening.log").write_text("started\nValueError: boom\nfinished\n")
    rows = [recording_status(n, tmp_path) for n in ("a", "b", "c")]
    assert [r["status"] for r in rows] == ["done", "failed", "not started"]
    assert rows[1]["stage"] == "whitening" and rows[1]["message"] == "ValueError: boom"
    parsed = list(csv.DictReader(format_table(rows).splitlines(), delimiter="\t"))
    assert tuple(parsed[0]) == COLUMNS and parsed[2]["stage"] == "check_input"


@pytest.mark.slow
def test_keep_going_sorts_the_good_recording_and_reports_the_broken_and_missing_ones(tmp_path):
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=3.0)
    good = generate(cfg, tmp_path / "data", name="good", seed=1)
    broken = tmp_path / "data" / "broken.bin"
    broken.write_bytes(good.bin.read_bytes()[:-3])  # not a whole number of samples
    missing = tmp_path / "data" / "missing.bin"  # never written
    n_channels = cfg.n_channels + int(cfg.sync_channel)
    table = write_table(
        tmp_path / "recordings.tsv",
        ("good", good.bin, good.probe, n_channels, cfg.sample_rate, "int16"),
        ("broken", broken, good.probe, n_channels, cfg.sample_rate, "int16"),
        ("missing", missing, good.probe, n_channels, cfg.sample_rate, "int16"),
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--keep-going",
        "--config",
        f"recordings={table}",
        "device=cpu",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]  # a failed recording fails the run ...
    assert (tmp_path / "results/good/phy/params.py").is_file(), out[-3000:]  # ... not the others
    summary = tmp_path / "results/summary.tsv"
    assert summary.is_file(), out[-3000:]
    rows = {r["recording"]: r for r in csv.DictReader(summary.open(), delimiter="\t")}
    assert list(rows) == ["good", "broken", "missing"]
    assert rows["good"]["status"] == "done" and int(rows["good"]["n_units"]) > 0
    for name in ("broken", "missing"):
        assert rows[name]["status"] == "failed" and rows[name]["stage"] == "check_input", rows
        assert rows[name]["message"] and rows[name]["log"].endswith("check_input.log")
    # the missing file's own job says what is wrong and what to do
    log = (tmp_path / "results/missing/logs/check_input.log").read_text()
    assert "missing.bin" in log and "does not exist" in log and "fix" in log.lower(), log
    assert "1 of 3 recordings done" in out


def test_missing_raw_file_does_not_stop_the_dag_of_the_others(tmp_path):
    """A dry run plans the missing recording's input check and the other recording's sort."""
    from kilosnake.groundtruth.generate import generate
    from kilosnake.groundtruth.presets import preset_config

    cfg = preset_config("demo", duration_s=3.0)
    good = generate(cfg, tmp_path / "data", name="good", seed=1)
    n_channels = cfg.n_channels + int(cfg.sync_channel)
    table = write_table(
        tmp_path / "recordings.tsv",
        ("good", good.bin, good.probe, n_channels, cfg.sample_rate, "int16"),
        (
            "gone",
            tmp_path / "nowhere.bin",
            tmp_path / "nowhere.json",
            n_channels,
            cfg.sample_rate,
            "int16",
        ),
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "1",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--dry-run",
        "--config",
        f"recordings={table}",
        "device=cpu",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "MissingInputException" not in out
    assert "results/gone/input.json" in out and "results/good/phy" in out
