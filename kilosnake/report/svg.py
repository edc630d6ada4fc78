"""The report's unit panels as inline SVG, written straight from NumPy arrays.

A report draws up to 100 unit panels. Drawn with matplotlib, each cost a figure, its layout and a
PNG encoding (about 0.1 s of a core; 3 s of eight worker processes for 100 units, the largest
part of the report on a GPU machine). A panel is three simple plots, a polyline per channel, a
histogram outline and a cloud of dots, so here it is written as SVG markup: a few milliseconds
per unit in the stage's own process, sharp at any zoom, and searchable text. Coordinates are
written with one decimal, so the same data give the same bytes.
"""

from __future__ import annotations

import dataclasses
import html
import math

import numpy as np

from kilosnake.report.figures import GOOD_COLOUR

#: size of a unit panel (pixels)
WIDTH, HEIGHT = 1080, 290
#: amplitude-over-time dots drawn at most per unit (a fixed random subset above)
MAX_DOTS = 5000
FONT = "font-family='Helvetica, Arial, sans-serif'"


@dataclasses.dataclass
class Frame:
    """A plot's rectangle on the panel (pixels) and the data range it shows."""

    left: float
    top: float
    width: float
    height: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def x(self, values):
        x0, x1 = self.xlim
        return self.left + (np.asarray(values, np.float64) - x0) / ((x1 - x0) or 1.0) * self.width

    def y(self, values):
        y0, y1 = self.ylim
        scaled = (np.asarray(values, np.float64) - y0) / ((y1 - y0) or 1.0)
        return self.top + self.height - scaled * self.height


def nice_ticks(lo: float, hi: float, target: int = 5) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside ``[lo, hi]``."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return np.array([lo]) if math.isfinite(lo) else np.array([])
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-9, step)
    return np.round(ticks, 12)


def tick_label(value: float) -> str:
    return f"{value:.4g}".replace("-", "−")


def text(x: float, y: float, label: str, size: int = 11, anchor: str = "middle", **extra) -> str:
    attrs = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in extra.items())
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'{attrs}>"
        f"{html.escape(label)}</text>"
    )


def axes_markup(frame: Frame, title: str, xlabel: str, ylabel: str) -> str:
    """The frame, ticks, tick labels, axis labels and title of one plot."""
    left, top, w, h = frame.left, frame.top, frame.width, frame.height
    bottom = top + h
    parts = [
        f"<rect x='{left:.1f}' y='{top:.1f}' width='{w:.1f}' height='{h:.1f}' fill='none' "
        "stroke='#333' stroke-width='0.8'/>"
    ]
    for v, px in zip(nice_ticks(*frame.xlim), frame.x(nice_ticks(*frame.xlim))):
        parts.append(f"<path d='M{px:.1f},{bottom:.1f}v4' stroke='#333'/>")
        parts.append(text(px, bottom + 15, tick_label(v), 10))
    for v, py in zip(nice_ticks(*frame.ylim), frame.y(nice_ticks(*frame.ylim))):
        parts.append(f"<path d='M{left:.1f},{py:.1f}h-4' stroke='#333'/>")
        parts.append(text(left - 6, py + 3.5, tick_label(v), 10, anchor="end"))
    parts.append(text(left + w / 2, bottom + 32, xlabel, 11))
    x_label, y_label = left - 44, top + h / 2
    rotate = f"rotate(-90 {x_label:.1f} {y_label:.1f})"
    parts.append(text(x_label, y_label, ylabel, 11, transform=rotate))
    parts.append(text(left + w / 2, top - 7, title, 12))
    return "".join(parts)


def _interleaved(xs, ys) -> tuple:
    """``(x0, y0, x1, y1, ...)`` as Python floats, for one ``%`` formatting of all points (the
    same text as formatting them one by one, several times faster)."""
    n = min(len(xs), len(ys))
    pairs = np.empty((n, 2), np.float64)
    pairs[:, 0], pairs[:, 1] = np.asarray(xs, np.float64)[:n], np.asarray(ys, np.float64)[:n]
    return tuple(pairs.ravel().tolist())


def polyline_d(xs, ys) -> str:
    """An SVG path through the points."""
    values = _interleaved(xs, ys)
    if not values:
        return ""
    return "M" + ("%.1f,%.1f " * (len(values) // 2) % values)[:-1]


def dots_d(xs, ys) -> str:
    """An SVG path of one dot per point (zero-length segments with round caps)."""
    values = _interleaved(xs, ys)
    return "M%.1f,%.1fh0" * (len(values) // 2) % values


def padded(lo: float, hi: float, margin: float) -> tuple[float, float]:
    return (lo - margin, hi + margin) if hi > lo else (lo - 1.0, lo + 1.0)


def spacing(values, default: float) -> float:
    """The smallest gap between distinct values (the contact pitch), ``default`` if one."""
    gaps = np.diff(np.unique(np.round(np.asarray(values, np.float64), 3)))
    return float(gaps.min()) if gaps.size else default


def waveform_plot(unit, left: float, top: float, width: float, height: float) -> str:
    """The template on the channels nearest its peak, each drawn at the contact's position."""
    w = np.asarray(unit.waveform)[:, unit.channels]
    pos = np.asarray(unit.positions)[unit.channels]
    dx, dy = spacing(pos[:, 0], 16.0), spacing(pos[:, 1], 20.0)
    scale = float(np.abs(w).max()) or 1.0
    t = np.linspace(-0.4, 0.4, w.shape[0]) * dx
    frame = Frame(
        left, top, width, height,
        padded(float(pos[:, 0].min()), float(pos[:, 0].max()), 0.6 * dx),
        padded(float(pos[:, 1].min()), float(pos[:, 1].max()), 1.0 * dy),
    )  # fmt: skip
    curves = []
    for k, c in enumerate(unit.channels):
        peak = int(c) == int(unit.peak_channel)
        d = polyline_d(frame.x(pos[k, 0] + t), frame.y(pos[k, 1] + w[:, k] / scale * dy * 0.9))
        colour, stroke = (GOOD_COLOUR, 1.4) if peak else ("#000", 0.8)
        curves.append(f"<path d='{d}' fill='none' stroke='{colour}' stroke-width='{stroke}'/>")
    title = (
        f"template, {w.shape[0] / unit.sample_rate * 1e3:.1f} ms "
        f"(peak {scale:.3g} {unit.amplitude_unit})"
    )
    return "".join(curves) + axes_markup(frame, title, "x (µm)", "y (µm)")


def autocorrelogram_plot(unit, left: float, top: float, width: float, height: float) -> str:
    """The autocorrelogram as a filled histogram, the refractory period shaded."""
    counts = np.asarray(unit.acg, np.float64)
    bin_ms = float(unit.acg_bin_ms)
    half = counts.size // 2
    edges = (np.arange(counts.size + 1) - half - 0.5) * bin_ms
    frame = Frame(
        left, top, width, height, (float(edges[0]), float(edges[-1])),
        (0.0, max(float(counts.max(initial=0.0)) * 1.05, 1.0)),
    )  # fmt: skip
    xs = np.repeat(frame.x(edges), 2)[1:-1]
    ys = np.repeat(frame.y(counts), 2)
    base = frame.y(0.0)
    outline = polyline_d(
        np.concatenate([[xs[0]], xs, [xs[-1]]]), np.concatenate([[base], ys, [base]])
    )
    r0, r1 = frame.x(-unit.refractory_ms), frame.x(unit.refractory_ms)
    shade = (
        f"<rect x='{r0:.1f}' y='{top:.1f}' width='{r1 - r0:.1f}' height='{height:.1f}' "
        "fill='#d7191c' fill-opacity='0.15'/>"
    )
    bars = f"<path d='{outline}Z' fill='#4d4d4d'/>" if counts.size else ""
    return shade + bars + axes_markup(frame, "autocorrelogram", "lag (ms)", "pairs")


def amplitude_plot(unit, left: float, top: float, width: float, height: float) -> str:
    """Spike amplitude over time, as dots (a fixed random subset of at most MAX_DOTS)."""
    t, a = np.asarray(unit.times_s), np.asarray(unit.amplitudes)
    if t.size > MAX_DOTS:
        keep = np.sort(np.random.default_rng(0).choice(t.size, MAX_DOTS, replace=False))
        t, a = t[keep], a[keep]
    top_amp = max(float(a.max()) * 1.1, 1e-9) if a.size else 1.0
    frame = Frame(left, top, width, height, (0.0, float(unit.duration_s) or 1.0), (0.0, top_amp))
    dots = (
        f"<path d='{dots_d(frame.x(t), frame.y(a))}' stroke='#2166ac' stroke-width='2.6' "
        "stroke-linecap='round' stroke-opacity='0.8'/>"
        if t.size
        else ""
    )
    ylabel = f"amplitude ({unit.amplitude_unit})"
    return dots + axes_markup(frame, "amplitude over time", "time (s)", ylabel)


def unit_panel_svg(unit) -> str:
    """The panel of one unit (a :class:`kilosnake.report.units.UnitView`) as an ``<svg>``
    element: waveform, autocorrelogram, amplitude over time, under the unit's title."""
    colour = GOOD_COLOUR if unit.label == "good" else "#000"
    plots = (
        waveform_plot(unit, 70, 50, 230, 190)
        + autocorrelogram_plot(unit, 370, 50, 270, 190)
        + amplitude_plot(unit, 710, 50, 355, 190)
    )
    title = text(10, 18, unit.title, 13, anchor="start", fill=colour)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} {HEIGHT}' "
        f"width='{WIDTH}' height='{HEIGHT}' role='img' {FONT}>"
        f"<title>{html.escape(unit.title)}</title>{title}{plots}</svg>"
    )
