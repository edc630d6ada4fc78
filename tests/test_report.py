"""The input check picture and the QC report: drawing pieces, then the rules on the demo sort,
the page rendered in headless Chromium, and the progress lines of the long stages' logs."""

import base64
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kilosnake.io.phy import read_phy
from kilosnake.io.probe import neuropixels_like
from kilosnake.report.build import SECTIONS
from kilosnake.report.input_check import (
    _ranges,
    channel_flags,
    input_view,
    probe_order,
    resolve_raw_path,
    write_input_check,
)
from kilosnake.report.units import (
    FALLBACK_UNITS,
    MAX_UNITS,
    busiest_window,
    nearest_channels,
    unit_rows,
    units_to_draw,
)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 4000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def test_units_to_draw_caps_good_units_and_says_so():
    chosen, note = units_to_draw(rows_for(["good"] * 130 + ["mua"] * 5), 100)
    assert len(chosen) == 100 and all(r["label"] == "good" for r in chosen)
    assert "first 100 of 130 good units" in note and "30 more" in note
    chosen, note = units_to_draw(rows_for(["mua"] * 30), 100)
    assert len(chosen) == FALLBACK_UNITS and "No unit is labelled good" in note
    assert [r["id"] for r in chosen][:2] == [29, 28]  # most spikes first


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


def png_size(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


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
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and png_size(data)[0] > 1000


def test_input_check_without_the_raw_file(tmp_path):
    info = write_input_json(tmp_path, 32, 1, write_raw=False)
    view = input_view(info)
    assert view.raw is None
    write_input_check(info, tmp_path / "input_check.png")
    assert (tmp_path / "input_check.png").read_bytes().startswith(PNG_SIGNATURE)


def test_raw_path_relative_to_the_workflow_folder(tmp_path, monkeypatch):
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "r.bin").write_bytes(b"\0" * 64)
    info = tmp_path / "results" / "r" / "input.json"
    info.parent.mkdir(parents=True)
    monkeypatch.chdir(info.parent)
    assert resolve_raw_path("resources/r.bin", info) == tmp_path / "resources" / "r.bin"
    assert resolve_raw_path("resources/missing.bin", info) is None


# --------------------------------------------------------------------------------------------
# the rules on the demo sort


def snakemake(workdir, *args):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo recording sorted on the CPU, with its report."""
    workdir = tmp_path_factory.mktemp("report_demo")
    t0 = time.perf_counter()
    out = snakemake(workdir, "results/demo/report.html", "--config", "device=cpu")
    print(f"demo sort and report: {time.perf_counter() - t0:.0f} s")
    (workdir / "console.txt").write_text(out)
    return workdir


def test_the_demo_run_is_quiet_and_ends_with_where_everything_is(demo):
    out = (demo / "console.txt").read_text()
    assert "Warning" not in out and "WARNING" not in out, [
        line for line in out.splitlines() if "arning" in line
    ]
    closing = out[out.index("kilosnake summary (results/summary.tsv)") :]
    assert "1 of 1 recordings done" in closing
    assert "demo: done, " in closing and " good, " in closing and " mua), " in closing
    assert (
        "Phy folder: results/demo/phy" in closing
        and "report:     results/demo/report.html" in closing
    )
    assert "scorecard:  well detected (accuracy >= 0.8)" in closing
    assert "Ground-truth scorecard" not in out  # the full scorecard is in its file
    assert "non-default parameters" not in out  # stage details are in the rule logs


def test_input_check_needs_only_the_input_check(tmp_path):
    out = snakemake(tmp_path, "--dry-run", "results/demo/input_check.png", "--config", "device=cpu")
    planned = set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    assert planned == {"demo_recording", "check_input", "input_report"}


class ReportParser(html.parser.HTMLParser):
    """Section ids, images, external references and unit figures of a report page."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external, self.unit_figures = [], [], [], []
        self.table_rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "figure" and (a.get("id") or "").startswith("unit-"):
            self.unit_figures.append(a["id"])
        if tag == "tr":
            self.table_rows += 1
        for key in ("src", "href"):
            value = a.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


def test_report_has_every_section_and_embedded_images(demo):
    page = (demo / "results/demo/report.html").read_text()
    parser = ReportParser()
    parser.feed(page)
    assert parser.sections == list(SECTIONS)
    assert parser.external == []  # self-contained
    assert len(parser.images) >= 5
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
        w, h = png_size(data)
        assert w > 300 and h > 150
    good = [
        line.split("\t")[0]
        for line in (demo / "results/demo/phy/cluster_KSLabel.tsv").read_text().splitlines()[1:]
        if line.endswith("\tgood")
    ]
    assert 0 < len(good) <= MAX_UNITS
    assert sorted(parser.unit_figures) == sorted(f"unit-{c}" for c in good)
    for section in SECTIONS:  # every section has content besides its title
        body = page.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert len(re.sub(r"<h2>.*?</h2>", "", body)) > 100, section
    assert "Ground-truth scorecard" in page


def test_unit_table_matches_the_phy_metrics(demo):
    phy = demo / "results/demo/phy"
    rows = unit_rows(read_phy(phy))
    n_metrics = len((phy / "cluster_metrics.tsv").read_text().splitlines()) - 1
    assert len(rows) == n_metrics
    labels = [r["label"] for r in rows]
    assert labels == sorted(labels, key=lambda s: s != "good")  # good units first
    for r in rows:  # every label explained; only good units are "good"
        assert (r["label_reason"] == "good") == (r["label"] == "good"), r
    assert any("refractory" in r["label_reason"] for r in rows)
    page = (demo / "results/demo/report.html").read_text()
    units = page.split('<section id="units">', 1)[1].split("</section>", 1)[0]
    assert units.count("<tr") == n_metrics + 1
    assert "<th>why</th>" in units and html.escape(rows[-1]["label_reason"]) in units


def test_snakemake_report_includes_the_page_and_the_input_check(demo):
    import zipfile

    snakemake(demo, "--config", "device=cpu", "--report", str(demo / "snakemake_report.zip"))
    names = zipfile.ZipFile(demo / "snakemake_report.zip").namelist()
    assert any(n.endswith("/report.html") and "/data/raw/" in n for n in names)
    assert any(n.endswith("/input_check.png") for n in names)


def ensure_chromium():
    """/usr/bin/chromium, installed with apt-get when missing and running as root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(
            "headless rendering needs /usr/bin/chromium: install Debian's chromium "
            "package (the tests install it themselves only when run as root)"
        )
    if shutil.which("apt-get") is None:
        pytest.skip("/usr/bin/chromium is missing and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # package lists not fetched yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0 or not CHROMIUM.exists():
        pytest.skip(f"could not install chromium with apt-get: {result.stderr[-500:]}")
    return CHROMIUM


def screenshot(page: Path, out: Path, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(ensure_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp}",
        f"--screenshot={out}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(demo, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("screenshot")
    shot = folder / "report.png"
    result = screenshot(demo / "results/demo/report.html", shot, folder / "profile")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    print(f"screenshot: {shot}")
    with Image.open(shot) as im:
        assert im.size == WINDOW
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page
    rows_with_ink = (pixels.std(axis=(1, 2)) > 5).mean()
    assert rows_with_ink > 0.5  # the page is filled, not one strip of content
    colours = np.unique(pixels[::7, ::7].reshape(-1, 3), axis=0)
    assert len(colours) > 200  # pictures, not only text on a background


def test_long_stages_log_progress_with_an_eta(demo):
    line = re.compile(
        r"INFO kilosnake\.\S+: (?P<label>[\w ]+): batch (?P<i>\d+)/(?P<n>\d+) "
        r"\(\d+%\), [\d.]+ (batch/s|s/batch), elapsed \d.*, ETA \d"
    )
    for stage, label in [
        ("preprocess", "preprocess"),
        ("drift", "drift detection"),
        ("learn", "learn"),
        ("final_pass", "final pass"),
    ]:
        text = (demo / f"results/demo/logs/{stage}.log").read_text()
        found = [m for m in map(line.search, text.splitlines()) if m]
        assert found, f"no progress line in {stage}.log"
        assert {m["label"] for m in found} == {label}
        assert found[0]["i"] == "1" and found[-1]["i"] == found[-1]["n"]


def test_every_log_opens_with_the_facts_and_closes_with_resources(demo):
    for log in sorted((demo / "results/demo/logs").glob("*.log")):
        lines = log.read_text().splitlines()
        assert lines[0].split(": ", 1)[1].startswith("non-default parameters"), log.name
        assert re.search(r"kilosnake \S+, stage \w+, Python", lines[1]), log.name
        assert re.search(
            r"done in [\d.]+ s \(CPU [\d.]+ s\), peak host memory \d+ MB", lines[-1]
        ), log.name
    report_log = (demo / "results/demo/logs/final_pass.log").read_text()
    assert "input preprocessed.zarr: traces (900000, 32) int16" in report_log
