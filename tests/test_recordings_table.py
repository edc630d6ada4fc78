"""Many recordings in one run: the recordings table and the run summary (a whole run with a
broken recording: ``test_reliability_workflow.py``)."""

import csv
from pathlib import Path

import pytest
from inputs import TABLE_HEADER as HEADER
from inputs import write_table
from workflow_runs import snakemake

from kilosnake.workflow.recordings import (
    RecordingsTableError,
    read_recordings_table,
    recording_sources,
)
from kilosnake.workflow.summary import COLUMNS, format_table, recording_status

ROOT = Path(__file__).resolve().parents[1]


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
        (
            [("a", "a.bin", "", "", "", ""), ("a", "b.bin", "", "", "", "")],
            HEADER,
            "used twice",
        ),
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
    out = snakemake(
        tmp_path, "--dry-run", config=(f"recordings={table}", "device=cpu"), cores=1, timeout=300
    ).output
    assert "MissingInputException" not in out
    assert "results/gone/input.json" in out and "results/good/phy" in out
