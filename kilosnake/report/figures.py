"""The pictures of the QC report and of the input check, drawn with matplotlib's Agg backend.

Every ``plot_*`` function draws one panel on an ``Axes`` it is given, from plain arrays; the
``*_figure`` functions assemble panels into a figure; :func:`png_bytes` renders a figure to PNG
bytes and closes it. Nothing here reads files (that is :mod:`kilosnake.report`), and nothing
needs a display: the Agg backend is selected before pyplot is imported (:func:`pyplot`, on
the first picture). The unit panels are written as SVG instead (:mod:`kilosnake.report.svg`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported when a picture is first drawn: a stage
    that draws none does not pay for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: above this many channels traces are drawn as an image instead of one line per channel
MAX_TRACE_LINES = 64
#: spacing of trace lines (and colour range of trace images), in noise SDs
TRACE_SPACING_SD = 6.0
#: resolution of the report's pictures
DPI = 90
GOOD_COLOUR = "#1b7837"
SPIKE_COLOUR = "#d95f02"  # the spikes circled on traces
MUA_COLOUR = "#999999"
FLAG_STYLE = {  # how flagged channels are marked on the probe and the per-channel panels
    "flat": dict(marker="x", color="black", label="flat"),
    "noisy": dict(marker="^", color="#e66101", label="noisy"),
    "saturated": dict(marker="s", color="#d7191c", label="saturated"),
}


#: zlib level of the report's PNGs: on the traces pictures level 3 encodes faster than the
#: default and gives smaller files
PNG_COMPRESS_LEVEL = 3


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """Render ``fig`` to PNG bytes and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    return buf.getvalue()


def shank_colours(kcoords) -> np.ndarray:
    """One RGBA colour per channel, by shank (tab10 cycle)."""
    plt = pyplot()
    shanks = np.unique(kcoords)
    index = np.searchsorted(shanks, kcoords)
    return plt.get_cmap("tab10")(index % 10)


# --------------------------------------------------------------------------------------------
# channels


def plot_probe(ax, xc, yc, kcoords, flags: dict, title: str = "probe") -> None:
    """Contacts at their positions coloured by shank; flagged channels marked.

    Parameters
    ----------
    ax : matplotlib Axes
    xc, yc, kcoords : ndarray (Nchan,)
        Contact positions (µm) and shank of every channel.
    flags : dict of str → bool ndarray (Nchan,)
        ``flat``, ``noisy``, ``saturated`` masks.
    title : str
    """
    size = float(np.clip(3000.0 / max(len(xc), 1), 4, 40))
    ax.scatter(xc, yc, c=shank_colours(kcoords), s=size, marker="s", linewidths=0)
    for name, style in FLAG_STYLE.items():
        mask = flags.get(name)
        if mask is not None and mask.any():
            colours = (
                {"color": style["color"]}
                if style["marker"] == "x"
                else {"facecolors": "none", "edgecolors": style["color"]}
            )
            ax.scatter(
                xc[mask],
                yc[mask],
                s=40,
                marker=style["marker"],
                label=f"{style['label']} ({int(mask.sum())})",
                **colours,
            )
    shanks = np.unique(kcoords)
    top, span = float(np.max(yc)), float(np.ptp(yc)) or 1.0
    for s in shanks if shanks.size > 1 else ():
        on = kcoords == s
        ax.text(np.mean(xc[on]), top + 0.02 * span, f"{s:g}", ha="center", va="bottom", fontsize=8)
    if shanks.size > 1:
        ax.set_ylim(np.min(yc) - 0.04 * span, top + 0.08 * span)
    if any(m.any() for m in flags.values()):
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title)
    ax.set_aspect("auto")
    ax.margins(0.15, 0.03)


def plot_channel_values(
    ax,
    values,
    order,
    kcoords,
    flags: dict,
    ylabel: str,
    title: str = "",
    log: bool = False,
    lines=(),
) -> None:
    """A per-channel value along the probe (channels in ``order``), flagged ones marked.

    ``lines`` are ``(value, label)`` pairs drawn as dashed horizontal references.
    """
    v = np.asarray(values, dtype=np.float64)[order]
    shank_of = np.asarray(kcoords)[order]
    colours = shank_colours(shank_of)
    # one filled outline per run of a shank's channels (bars of width 1): a patch per channel
    # would cost more than the rest of the figure
    starts = np.flatnonzero(np.r_[True, shank_of[1:] != shank_of[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], v.size]):
        edges = np.arange(a, b + 1) - 0.5
        ax.stairs(np.nan_to_num(v[a:b]), edges, fill=True, color=colours[a], linewidth=0)
    for name, style in FLAG_STYLE.items():
        mask = flags.get(name)
        if mask is not None and mask[order].any():
            sel = np.flatnonzero(mask[order])
            ax.scatter(
                sel,
                v[sel],
                marker=style["marker"],
                color=style["color"],
                s=25,
                zorder=3,
                label=style["label"],
            )
    for value, label in lines:
        ax.axhline(value, color="#555555", linestyle="--", linewidth=0.8)
        ax.text(
            v.size - 0.5, value, f" {label}", va="bottom", ha="right", fontsize=7, color="#555555"
        )
    if log and np.any(v > 0):
        ax.set_yscale("symlog", linthresh=max(np.min(v[v > 0]), 1e-6))
    top = max([float(np.nanmax(v)) if v.size else 0.0] + [val for val, _ in lines])
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xlim(-0.5, v.size - 0.5)
    ax.set_xlabel("channel, probe order (shank, depth)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def plot_traces(
    ax, x, sample_rate: float, start_s: float, title: str, unit: str, spikes=None
) -> None:
    """Traces of channels in probe order: one line each (few channels) or an image.

    Parameters
    ----------
    ax : matplotlib Axes
    x : ndarray (n_samples, n_channels)
        Traces, channels already in probe order.
    sample_rate : float
    start_s : float
        Time of the first sample (s).
    title, unit : str
    spikes : tuple (times_s, rows), optional
        Spikes in the window, circled: time (s) and row in ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    t = start_s + np.arange(x.shape[0]) / sample_rate
    step = TRACE_SPACING_SD * noise_sd(x)
    if x.shape[1] <= MAX_TRACE_LINES:
        ax.plot(t * 1e3, x / step + np.arange(x.shape[1]), color="#222222", linewidth=0.4)
        ax.set_ylim(-1, x.shape[1])
        title = f"{title}\nchannel spacing {step:.3g} {unit}"
    else:
        half = step / 2
        ax.imshow(
            x.T,
            aspect="auto",
            origin="lower",
            cmap="RdBu_r",
            vmin=-half,
            vmax=half,
            extent=(t[0] * 1e3, t[-1] * 1e3, -0.5, x.shape[1] - 0.5),
            interpolation="nearest",
        )
        title = f"{title}\ncolour range ±{half:.3g} {unit}"
    if spikes is not None and len(spikes[0]):
        ts, rows = spikes
        ax.scatter(
            np.asarray(ts) * 1e3,
            rows,
            s=110,
            marker="o",
            facecolors="none",
            edgecolors=SPIKE_COLOUR,
            linewidths=1.6,
            zorder=3,
        )
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("channel, probe order")
    ax.set_title(title, fontsize=10)


def noise_sd(x) -> float:
    """Median over channels of a robust noise SD (median absolute deviation / 0.6745)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 1.0
    mad = np.median(np.abs(x - np.median(x, axis=0)), axis=0) / 0.6745
    sd = float(np.median(mad))
    return sd if sd > 0 else float(np.abs(x).max() or 1.0)


# --------------------------------------------------------------------------------------------
# the sort as a whole


def plot_spikes_per_batch(ax, found, kept, batch_s: float) -> None:
    """Spikes found per batch (bars) and kept after curation (line); empty batches marked."""
    found = np.asarray(found)
    b = np.arange(found.size)
    ax.bar(b, found, width=0.9, color="#92c5de", label="found (final pass)")
    if kept is not None:
        ax.step(b, kept, where="mid", color="#0571b0", label="kept (curated)")
    empty = np.flatnonzero(found == 0)
    if empty.size:
        ax.scatter(
            empty,
            np.zeros(empty.size),
            marker="v",
            color="#d7191c",
            s=40,
            zorder=3,
            label=f"no spikes ({empty.size} batches)",
        )
    ax.set_xlim(-0.6, max(found.size, 1) - 0.4)
    ax.set_xlabel(f"batch ({batch_s:.2f} s each)")
    ax.set_ylabel("spikes")
    ax.set_title("spikes per batch")
    ax.legend(fontsize=7, loc="upper right")


def plot_unit_raster(
    ax, times_s, depth, good, duration_s: float, max_points: int = 200_000
) -> None:
    """Sorted spikes: time against the depth of their unit, good units in colour."""
    times_s, depth, good = np.asarray(times_s), np.asarray(depth), np.asarray(good, bool)
    if times_s.size > max_points:
        keep = np.sort(np.random.default_rng(0).choice(times_s.size, max_points, replace=False))
        times_s, depth, good = times_s[keep], depth[keep], good[keep]
    ax.scatter(
        times_s[~good],
        depth[~good],
        s=1,
        color=MUA_COLOUR,
        linewidths=0,
        label="mua",
        rasterized=True,
    )
    ax.scatter(
        times_s[good],
        depth[good],
        s=1,
        color=GOOD_COLOUR,
        linewidths=0,
        label="good",
        rasterized=True,
    )
    ax.set_xlim(0, duration_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("unit depth (µm)")
    ax.set_title("sorted spikes at their unit's depth")
    ax.legend(fontsize=7, loc="upper right", markerscale=6)


# --------------------------------------------------------------------------------------------
# assembled figures


def input_check_figure(view) -> Figure:
    """Probe, per-channel RMS and saturation, and a raw snippet, on one figure.

    Parameters
    ----------
    view : kilosnake.report.input_check.InputView

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    fig = plt.figure(figsize=(15, 7.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 2, 2.2], height_ratios=[1, 1])
    plot_probe(
        fig.add_subplot(grid[:, 0]),
        view.xc,
        view.yc,
        view.kcoords,
        view.flags,
        f"probe {view.probe_name}\n{view.xc.size} channels, "
        f"{np.unique(view.kcoords).size} shank(s)",
    )
    ax_rms = fig.add_subplot(grid[0, 1])
    med = float(np.median(view.rms)) if view.rms.size else 0.0
    plot_channel_values(
        ax_rms,
        view.rms,
        view.order,
        view.kcoords,
        view.flags,
        f"RMS ({view.amplitude_unit})",
        "per-channel RMS (raw)",
        lines=[(med, "median"), (view.noisy_factor * med, "noisy")],
    )
    ax_sat = fig.add_subplot(grid[1, 1], sharex=ax_rms)
    plot_channel_values(
        ax_sat,
        100 * view.saturation,
        view.order,
        view.kcoords,
        view.flags,
        "values at the limits (%)",
        "saturation",
        lines=[(100 * view.saturated_fraction, "saturated")],
    )
    ax_raw = fig.add_subplot(grid[:, 2])
    if view.raw is not None:
        plot_traces(
            ax_raw,
            view.raw,
            view.sample_rate,
            view.raw_start_s,
            f"raw, {view.raw.shape[0] / view.sample_rate * 1e3:.0f} ms at "
            f"{view.raw_start_s:.1f} s (median removed)",
            view.amplitude_unit,
        )
    else:
        ax_raw.text(0.5, 0.5, "raw file not readable", ha="center", va="center")
        ax_raw.set_axis_off()
    fig.suptitle(view.title, fontsize=11, x=0.01, ha="left")
    return fig


def traces_figure(
    raw, pre, sample_rate: float, start_s: float, unit: str, spikes=None, title: str = ""
) -> Figure:
    """The same window, raw and preprocessed, side by side (channels in probe order)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.4), sharey=True)
    # fixed margins: matplotlib's constrained layout measures every text, as long as the drawing
    fig.subplots_adjust(left=0.045, right=0.995, bottom=0.07, top=0.88, wspace=0.06)
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    if raw is not None:
        plot_traces(axes[0], raw, sample_rate, start_s, "raw (median removed)", unit)
    else:
        axes[0].text(0.5, 0.5, "raw file not readable", ha="center", va="center")
    plot_traces(
        axes[1],
        pre,
        sample_rate,
        start_s,
        "preprocessed (filtered, whitened; circles: spikes found)",
        "whitened SD",
        spikes,
    )
    return fig


def batches_figure(found, kept, batch_s: float, raster) -> Figure:
    """Spikes per batch above the raster of sorted spikes at their unit's depth."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(14, 7), height_ratios=[1, 1.6])
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.07, top=0.96, hspace=0.3)  # fixed
    plot_spikes_per_batch(axes[0], found, kept, batch_s)
    plot_unit_raster(axes[1], *raster)
    return fig
