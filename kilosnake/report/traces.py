"""The ``traces_plot`` stage: the report's traces picture, drawn while curation runs.

``results/{recording}/traces.png`` shows the same 100 ms of the recording raw (median removed)
and preprocessed (filtered, whitened), channels in probe order, with the spikes the final pass
found circled at their template's peak channel. The window is the one with most of those
spikes. Everything it reads is there once the final pass is done (``spikes.zarr``,
``templates.zarr``, ``preprocessed.zarr`` and the raw file), so the picture is drawn beside
merge, split and cutoff, and the report (which waits for curation) only embeds it.
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.io.input_json import probe_from_input_json, read_input_json
from kilosnake.io.store import open_store
from kilosnake.io.traces import PreprocessedReader
from kilosnake.report.figures import png_bytes, traces_figure
from kilosnake.report.input_check import (
    TRACE_WINDOW_S,
    _write_bytes,
    amplitude_unit,
    probe_order,
    read_raw_window,
    resolve_raw_path,
)
from kilosnake.report.units import busiest_window

logger = logging.getLogger(__name__)


def found_spikes(spikes, templates) -> tuple[np.ndarray, np.ndarray]:
    """Time (samples) and peak channel of every spike of the final pass (``spikes.zarr``): the
    peak channel is its template's (``iW`` of ``templates.zarr``)."""
    sp, tp = open_store(spikes), open_store(templates)
    times = np.asarray(sp["time"][...], np.int64)
    peak = np.asarray(tp["iW"][...], np.int64)
    return times, peak[np.asarray(sp["template"][...], np.int64)]


def traces_window(info: dict, times) -> tuple[int, int]:
    """``(start, n)`` in samples: the 100 ms window with most ``times``."""
    n = int(round(TRACE_WINDOW_S * float(info["sample_rate"])))
    return busiest_window(times, info["n_samples"], n), n


def write_traces_picture(input_json, preprocessed, spikes, templates, out) -> None:
    """The ``traces_plot`` stage: the stores of the sort → ``traces.png`` (see the module
    docstring).

    Parameters
    ----------
    input_json : str or Path
    preprocessed, spikes, templates : str or Path
        ``preprocessed.zarr``, ``spikes.zarr`` and ``templates.zarr``.
    out : str or Path
        PNG to write (through a temporary file and a rename).
    """
    info = read_input_json(input_json)
    fs = float(info["sample_rate"])
    probe = probe_from_input_json(info)
    order = probe_order(probe.kcoords, probe.yc, probe.xc)
    times, peaks = found_spikes(spikes, templates)
    start, n = traces_window(info, times)
    raw_path = resolve_raw_path(info["dat"], input_json)
    raw = None if raw_path is None else read_raw_window(info, raw_path, start, n)[:, order]
    pre = PreprocessedReader(preprocessed).read(start, start + n)[:, order]
    row_of = np.empty(order.size, np.int64)
    row_of[order] = np.arange(order.size)
    inside = (times >= start) & (times < start + n)
    circled = (times[inside] / fs, row_of[peaks[inside]])
    title = (
        f"{TRACE_WINDOW_S * 1e3:.0f} ms from {start / fs:.2f} s, the window with most spikes "
        f"found by the final pass ({int(inside.sum())})"
    )
    fig = traces_figure(raw, pre, fs, start / fs, amplitude_unit(info), circled, title)
    _write_bytes(out, png_bytes(fig))
    logger.info("traces picture written to %s (%s)", out, title)
