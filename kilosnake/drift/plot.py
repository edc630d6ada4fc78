"""The drift stage's picture: displacement per depth block, spike rasters before and after.

One column per shank, three rows:

1. the estimated displacement of every depth block over time (µm; positive = units at larger
   depth than in the reference), coloured by block depth;
2. the drift-detection spikes, depth over time, as detected;
3. the same spikes at their corrected depth (depth minus the displacement interpolated at the
   spike's batch and depth): straight horizontal bands when the correction works.

Rendered with matplotlib's Agg backend, so it runs headless.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kilosnake.drift.registration import corrected_depths
from kilosnake.io.drift_store import read_drift_store

logger = logging.getLogger(__name__)


#: at most this many spikes are drawn per shank (a seeded random subset)
MAX_POINTS = 100_000


def run_drift_plot(drift, path) -> None:
    """The ``drift_plot`` stage: ``drift.zarr`` → its picture (see :func:`plot_drift`)."""
    plot_drift(read_drift_store(drift), path)


def plot_drift(est, path, max_points: int = MAX_POINTS) -> None:
    """Write the drift figure of ``est`` (a :class:`~kilosnake.io.drift_store.DriftEstimate`) to
    ``path``.

    Parameters
    ----------
    est : DriftEstimate
    path : str or Path
        PNG file to write (its folder is created).
    max_points : int
        Spikes drawn per shank and raster.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_shanks = len(est.shank_ids)
    fig, axes = plt.subplots(
        3,
        n_shanks,
        figsize=(6.5 * n_shanks, 10),
        squeeze=False,
        sharex="col",
        constrained_layout=True,
    )
    spikes = est.spikes
    after_all = corrected_depths(spikes["depth"], spikes["batch"], spikes["shank"], est)
    for k in range(n_shanks):
        title = f"shank {est.shank_ids[k]:g}" if n_shanks > 1 else ""
        _plot_displacement(axes[0, k], est, k, title)
        sel = _subset(np.flatnonzero(spikes["shank"] == k), max_points)
        t = spikes["time"][sel] / est.sample_rate
        amp = spikes["amplitude"][sel]
        _plot_raster(axes[1, k], t, spikes["depth"][sel], amp, "spike depth, as detected")
        _plot_raster(axes[2, k], t, after_all[sel], amp, "spike depth, drift corrected")
        axes[2, k].set_xlabel("time (s)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    logger.info("drift plot written to %s", path)


def _subset(indices: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``indices``, a seeded random subset in time order."""
    if indices.size <= n:
        return indices
    return np.sort(np.random.default_rng(0).choice(indices, n, replace=False))


def _plot_displacement(ax, est, k: int, title: str) -> None:
    """Displacement of every block of shank ``k`` over time."""
    import matplotlib.pyplot as plt

    nb = est.n_batches
    centres = (np.arange(nb) + 0.5) * est.NT / est.sample_rate
    if not est.enabled:
        ax.text(
            0.5,
            0.5,
            f"drift correction off:\n{est.reason}",
            ha="center",
            va="center",
            transform=ax.transAxes,
            wrap=True,
        )
        ax.plot(centres, np.zeros(nb), color="0.6")
    else:
        n_blocks = est.dshift.shape[2]
        colours = plt.cm.viridis(np.linspace(0, 1, max(n_blocks, 2)))
        for j in range(n_blocks):
            ax.plot(
                centres,
                est.dshift[k, :, j],
                color=colours[j],
                lw=1.2,
                label=f"{est.yblk[k, j]:.0f} um",
            )
        if n_blocks > 1:
            ax.legend(title="block centre", fontsize=7, ncols=2, loc="upper right")
    ax.set_ylabel("displacement (um)")
    ax.set_title("drift estimate" + (f", {title}" if title else ""))
    ax.grid(alpha=0.3)


#: pixels of a raster image (time bins, depth bins)
RASTER_BINS = (480, 320)


def _plot_raster(ax, t, depth, amplitude, title: str) -> None:
    """Spike depth over time, darker for larger spikes: an image whose pixel shows the largest
    spike that falls in it (one image instead of a marker per spike, so drawing does not grow
    with the spike count)."""
    if t.size:
        shade = np.clip(np.log10(np.maximum(amplitude, 1.0)) / 2.0, 0.0, 1.0)
        image, extent = _largest_per_pixel(t, depth, shade, RASTER_BINS)
        ax.imshow(
            image.T,
            origin="lower",
            extent=extent,
            aspect="auto",
            cmap="Greys",
            vmin=-0.3,
            vmax=1.0,
            interpolation="nearest",
        )
    else:
        ax.text(0.5, 0.5, "no drift spikes", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("depth (um)")
    ax.set_title(title)


def _largest_per_pixel(x, y, value, bins):
    """``(bins[0], bins[1])`` image of the largest ``value`` per pixel (NaN where empty, drawn
    blank) and its extent."""
    x, y, value = (np.asarray(a, dtype=np.float64) for a in (x, y, value))
    lo = np.array([x.min(), y.min()])
    hi = np.array([x.max(), y.max()])
    hi = np.where(hi > lo, hi, lo + 1.0)
    ix = np.minimum(((x - lo[0]) / (hi[0] - lo[0]) * bins[0]).astype(np.int64), bins[0] - 1)
    iy = np.minimum(((y - lo[1]) / (hi[1] - lo[1]) * bins[1]).astype(np.int64), bins[1] - 1)
    image = np.full(bins, -np.inf)
    np.maximum.at(image, (ix, iy), value)
    image[np.isneginf(image)] = np.nan
    return image, (lo[0], hi[0], lo[1], hi[1])
