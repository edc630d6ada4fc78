"""The unit panels written as SVG: well-formed, the data where the axes say, the same bytes for
the same data."""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from kilosnake.report import svg
from kilosnake.report.units import UnitView

NS = "{http://www.w3.org/2000/svg}"


def a_unit(n_spikes=300, label="good", seed=0):
    rng = np.random.default_rng(seed)
    positions = np.stack([np.tile([0.0, 32.0], 16), np.repeat(np.arange(16) * 20.0, 2)], 1)
    t = np.linspace(-1, 1, 61)
    waveform = -np.exp(-(t[:, None] ** 2) * 40) * np.exp(-np.arange(32) / 4)[None, :]
    acg = np.concatenate([np.zeros(3), np.arange(1, 49)]).astype(float)
    acg = np.concatenate([acg[::-1][:-1], acg])  # 101 bins, empty around zero lag
    times = np.sort(rng.uniform(0, 60, n_spikes))
    return UnitView(
        id=7, label=label, title="unit 7 (good): test & <check>", waveform=waveform * 80,
        positions=positions, channels=np.arange(12), peak_channel=0, acg=acg, acg_bin_ms=1.0,
        refractory_ms=2.0, times_s=times, amplitudes=rng.uniform(50, 100, n_spikes),
        duration_s=60.0, sample_rate=30000.0, amplitude_unit="µV",
    )  # fmt: skip


def paths(root):
    return [p.get("d") for p in root.iter(f"{NS}path")]


def numbers(d):
    return np.array([float(v) for v in re.findall(r"-?\d+\.?\d*", d)])


@pytest.mark.parametrize(
    "lo, hi, expected",
    [(0, 10, [0, 2, 4, 6, 8, 10]), (-0.37, 0.41, [-0.2, 0, 0.2, 0.4]), (3, 3, [3])],
)
def test_ticks_are_round_and_inside_the_range(lo, hi, expected):
    np.testing.assert_allclose(svg.nice_ticks(lo, hi), expected)


def test_a_panel_is_well_formed_svg_of_the_panel_size_with_its_title_escaped():
    markup = svg.unit_panel_svg(a_unit())
    root = ET.fromstring(markup)
    assert (root.get("width"), root.get("height")) == (str(svg.WIDTH), str(svg.HEIGHT))
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "unit 7 (good): test & <check>" in texts
    assert "autocorrelogram" in texts and "amplitude over time" in texts


def test_one_curve_per_drawn_channel_the_peak_in_colour():
    root = ET.fromstring(svg.unit_panel_svg(a_unit()))
    curves = [p for p in root.iter(f"{NS}path") if p.get("fill") == "none"]
    assert len(curves) == 12
    assert [p.get("stroke") for p in curves].count(svg.GOOD_COLOUR) == 1
    assert all(numbers(p.get("d")).size == 2 * 61 for p in curves)


def test_every_spike_is_a_dot_inside_the_amplitude_plot_up_to_the_cap():
    for n, drawn in ((300, 300), (svg.MAX_DOTS + 500, svg.MAX_DOTS)):
        root = ET.fromstring(svg.unit_panel_svg(a_unit(n)))
        (dots,) = [p.get("d") for p in root.iter(f"{NS}path") if p.get("stroke") == "#2166ac"]
        xy = numbers(dots.replace("h0", " ")).reshape(-1, 2)
        assert len(xy) == drawn
        assert (xy[:, 0] >= 710).all() and (xy[:, 0] <= 710 + 355).all()
        assert (xy[:, 1] >= 50).all() and (xy[:, 1] <= 50 + 190).all()


def test_the_autocorrelogram_outline_follows_the_counts():
    unit = a_unit()
    root = ET.fromstring(svg.unit_panel_svg(unit))
    (outline,) = [p.get("d") for p in root.iter(f"{NS}path") if p.get("fill") == "#4d4d4d"]
    xy = numbers(outline.rstrip("Z")).reshape(-1, 2)
    frame = svg.Frame(370, 50, 270, 190, (-50.5, 50.5), (0.0, unit.acg.max() * 1.05))
    # two vertices per bin (its left and right edge) between the two baseline corners
    np.testing.assert_allclose(xy[1:-1:2, 1], np.round(frame.y(unit.acg), 1), atol=0.051)
    assert xy[0, 1] == xy[-1, 1] == pytest.approx(frame.y(0.0), abs=0.051)


def test_the_same_unit_gives_the_same_bytes():
    assert svg.unit_panel_svg(a_unit()) == svg.unit_panel_svg(a_unit())
    assert svg.unit_panel_svg(a_unit(label="mua")) != svg.unit_panel_svg(a_unit())
