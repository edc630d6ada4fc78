"""The QC report rules on the demo sort: the page's sections and pictures, the unit table,
Snakemake's own report, the page rendered in headless Chromium, and the progress lines of the
long stages' logs."""

import base64
import html
import html.parser
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree
from pathlib import Path

import numpy as np
import pytest
from pictures import BATCHES, INPUT_CHECK, TRACES, UNIT, assert_picture, drift_size
from workflow_runs import planned_rules, snakemake

from kilosnake.io.phy import read_phy
from kilosnake.report.build import SECTIONS
from kilosnake.report.units import MAX_UNITS, unit_rows

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 4000)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------
# the rules on the demo sort


@pytest.fixture(scope="module")
def demo(demo_sort):
    """The demo recording sorted on the CPU, with its report (shared by the session)."""
    return demo_sort


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
    dry = snakemake(tmp_path, "--dry-run", "results/demo/input_check.png")
    assert planned_rules(dry.output) == {"demo_recording", "check_input", "input_report"}


class ReportParser(html.parser.HTMLParser):
    """Section ids, images, external references and unit figures of a report page."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external, self.unit_figures = [], [], [], []
        self.unit_panels = []  # (width, height) of the <svg> of each unit figure
        self.table_rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "figure" and (a.get("id") or "").startswith("unit-"):
            self.unit_figures.append(a["id"])
        if tag == "svg" and len(self.unit_panels) < len(self.unit_figures):
            self.unit_panels.append((int(a["width"]), int(a["height"])))
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
    sizes = []
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        image = assert_picture(base64.b64decode(src.split(",", 1)[1], validate=True))
        sizes.append(image.shape[1::-1])
    # input check, traces, drift, batches as PNG; then one SVG panel per drawn unit
    assert sizes == [INPUT_CHECK, TRACES, drift_size(1), BATCHES]
    assert parser.unit_panels == [UNIT] * len(parser.unit_figures)
    for svg in re.findall(r"<svg .*?</svg>", page):  # each panel is well-formed XML
        root = xml.etree.ElementTree.fromstring(svg)
        assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 12
    phy = demo / "results/demo/phy"
    noise = {
        line.split("\t")[0]
        for line in (phy / "cluster_KSLabel.tsv").read_text().splitlines()[1:]
        if line.endswith("\tnoise")
    }
    with_spikes = {str(c) for c in np.unique(np.load(phy / "spike_clusters.npy"))}
    units = with_spikes - noise  # every unit gets a panel, good or mua
    assert 0 < len(units) <= MAX_UNITS
    assert sorted(parser.unit_figures) == sorted(f"unit-{c}" for c in units)
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

    snakemake(demo, "--report", str(demo / "snakemake_report.zip"))
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
        ("preprocess", "preprocess"),  # with the drift detections: the drift stage is short
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
    assert "input preprocessed.zarr: traces (1800000, 32) int16" in report_log
