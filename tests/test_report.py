"""The input check picture and the QC report's drawing pieces (the rules on the demo sort:
``test_report_workflow.py``)."""

import json
from pathlib import Path

import numpy as np
import pytest
from pictures import INPUT_CHECK, assert_picture

from kilosnake.io.probe import neuropixels_like
from kilosnake.report.input_check import (
    _ranges,
    channel_flags,
    input_view,
    probe_order,
    resolve_raw_path,
    write_input_check,
)
from kilosnake.report.units import (
    busiest_window,
    nearest_channels,
    units_to_draw,
)

# --------------------------------------------------------------------------------------------
# pieces


def test_channel_flags():
    rms = np.array([10.0, 11.0, 0.0, 9.0, 45.0, 10.0])
    sat = np.array([0, 0, 0, 0.2, 0, 0.005])
    f = channel_flags(rms, sat)
    assert f["flat"].tolist() == [False, False, True, False, False, False]
    assert f["noisy"].tolist() == [False, False, False, False, True, False]
    assert f["saturated"].tolist() == [False, False, False, True, False, False]


def test_probe_order_is_shank_then_depth_then_x():
    order = probe_order([1, 0, 0, 1, 0], [0, 20, 0, 10, 0], [0, 0, 32, 0, 16])
    assert order.tolist() == [4, 2, 1, 0, 3]


def test_busiest_window():
    times = np.array([5, 150, 160, 170, 390])
    assert busiest_window(times, 400, 100) == 100
    assert busiest_window([], 1000, 100) == 500


def test_ranges_text():
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def rows_for(labels):
    return [
        {"id": i, "label": lab, "n_spikes": 10 + i, "depth": float(i)}
        for i, lab in enumerate(labels)
    ]


def test_units_to_draw_covers_every_unit_but_noise_and_caps_them():
    rows = rows_for(["good"] * 3 + ["mua"] * 4 + ["noise"] * 2)
    chosen, note = units_to_draw(rows, 100)
    assert [r["id"] for r in chosen] == list(range(7))
    assert "All 7 units" in note and "2 noise clusters" in note
    chosen, note = units_to_draw(rows_for(["good"] * 130 + ["mua"] * 5), 100)
    assert len(chosen) == 100 and all(r["label"] == "good" for r in chosen)
    assert "first 100 of 135 units" in note and "35 more" in note


def test_nearest_channels_stay_on_the_peak_channel_shank():
    probe = neuropixels_like(96, n_shanks=2)
    pos = np.stack([probe.xc, probe.yc], axis=1)
    near = nearest_channels(pos, probe.kcoords, 10, n=12)
    assert near[0] == 10 and len(near) == 12
    assert np.all(probe.kcoords[near] == probe.kcoords[10])


def write_input_json(
    folder, n_channels, n_shanks, flat=(), noisy=(), saturated=(), write_raw=True, extra_rows=1
):
    """An input.json as check_input writes it (docs/stores.md), with a noise raw file."""
    probe = neuropixels_like(n_channels, n_shanks=n_shanks)
    total = n_channels + extra_rows
    n = 30000
    rng = np.random.default_rng(0)
    x = rng.normal(0, 20, (n, total))
    rms = np.full(n_channels, 20.0)
    sat = np.zeros(n_channels)
    for c in flat:
        x[:, probe.chan_map[c]] = 0
        rms[c] = 0
    for c in noisy:
        rms[c] = 100.0
    for c in saturated:
        sat[c] = 0.05
    raw = Path(folder) / "rec.bin"
    if write_raw:
        x.astype(np.int16).tofile(raw)
    info = {
        "dat": str(raw),
        "n_channels_total": total,
        "dtype": "int16",
        "sample_rate": 30000.0,
        "uv_per_bit": 2.34,
        "n_samples": n,
        "duration_s": 1.0,
        "NT": 8192,
        "n_batches": 4,
        "probe": probe.to_dict(),
        "rms": rms.tolist(),
        "saturation_fraction": sat.tolist(),
    }
    path = Path(folder) / "input.json"
    path.write_text(json.dumps(info))
    return path


@pytest.mark.parametrize("n_channels, n_shanks", [(32, 1), (192, 4)])
def test_input_check_picture(tmp_path, n_channels, n_shanks):
    info = write_input_json(tmp_path, n_channels, n_shanks, flat=[3], noisy=[7], saturated=[11])
    view = input_view(info)
    assert view.raw.shape == (3000, n_channels)
    assert view.unused_rows == [n_channels]
    assert view.flags["flat"][3] and view.flags["noisy"][7] and view.flags["saturated"][11]
    assert np.all(view.raw[:, np.flatnonzero(view.order == 3)[0]] == 0)  # probe order applied
    out = tmp_path / "input_check.png"
    write_input_check(info, out)
    assert_picture(out, INPUT_CHECK)


def test_input_check_without_the_raw_file(tmp_path):
    info = write_input_json(tmp_path, 32, 1, write_raw=False)
    view = input_view(info)
    assert view.raw is None
    write_input_check(info, tmp_path / "input_check.png")
    assert_picture(tmp_path / "input_check.png", INPUT_CHECK)  # probe and statistics drawn


def test_raw_path_relative_to_the_workflow_folder(tmp_path, monkeypatch):
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "r.bin").write_bytes(b"\0" * 64)
    info = tmp_path / "results" / "r" / "input.json"
    info.parent.mkdir(parents=True)
    monkeypatch.chdir(info.parent)
    assert resolve_raw_path("resources/r.bin", info) == tmp_path / "resources" / "r.bin"
    assert resolve_raw_path("resources/missing.bin", info) is None


def test_run_table_reads_each_stage_backend_from_its_log(tmp_path, caplog):
    import logging

    from kilosnake.report.run_log import stage_table
    from kilosnake.runtime.backend import get_backend

    with caplog.at_level(logging.INFO, logger="kilosnake"):
        get_backend("cpu")
    (tmp_path / "logs").mkdir()
    lines = [f"12:00:00 INFO {r.name}: {r.getMessage()}" for r in caplog.records]
    lines.append(
        "12:00:01 INFO kilosnake.runtime.logs: done in 1.5 s (CPU 1.2 s), peak host memory 99 MB"
    )
    (tmp_path / "logs" / "whitening.log").write_text("\n".join(lines) + "\n")
    assert stage_table(tmp_path) == [["whitening", "1.5", "1.2", "99", "—", "cpu (NumPy)"]]
