"""Export of a multi-shank recording: the shanks' sorts joined into one Phy folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kilosnake.export.sources import ExportSources, read_sources
from kilosnake.export.tables import ClusterTable
from kilosnake.export.writer import publish_phy_folder
from kilosnake.io.input_json import read_input_json
from kilosnake.io.shank_sets import shank_stores

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# joining the shanks at export


class JoinedRows:
    """Per-spike rows of several shanks' arrays in the joined order, read slice by slice.

    Row ``i`` is row ``rows[i]`` of ``arrays[shank[i]]``; each shank's rows appear in
    increasing order, so a slice reads a contiguous stretch of each shank's array. A shank with
    fewer feature columns (last axis) than another gets zeros in the extra ones.
    """

    def __init__(self, arrays, shank: np.ndarray, rows: np.ndarray):
        self.arrays, self.shank, self.rows = arrays, shank, rows
        heads = {tuple(a.shape[1:-1]) for a in arrays}
        if len(heads) != 1:
            raise ValueError(
                f"the shanks' feature arrays have shapes {sorted(heads)} before "
                "their last axis; they cannot be joined in one Phy folder"
            )
        width = max(int(a.shape[-1]) for a in arrays)
        self.shape = (int(shank.size),) + heads.pop() + (width,)
        self.dtype = np.dtype(arrays[0].dtype)

    def __getitem__(self, key):
        lo, hi, _ = key.indices(self.shape[0])
        out = np.zeros((max(0, hi - lo),) + self.shape[1:], self.dtype)
        for s, array in enumerate(self.arrays):
            on = np.flatnonzero(self.shank[lo:hi] == s)
            if on.size:
                r = self.rows[lo:hi][on]
                part = np.asarray(array[int(r[0]) : int(r[-1]) + 1])[r - r[0]]
                out[on, ..., : part.shape[-1]] = part
        return out


def _block_diagonal(blocks) -> np.ndarray:
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n), np.asarray(blocks[0]).dtype)
    at = 0
    for b in blocks:
        out[at : at + b.shape[0], at : at + b.shape[1]] = b
        at += b.shape[0]
    return out


def widen(table: np.ndarray, width: int, start: int, stop: int, total: int) -> np.ndarray:
    """``table`` (rows of ids in ``[start, stop)``) widened to ``width`` columns with ids outside
    that range (the first ones from ``stop`` on, wrapping around): ids no row already holds."""
    extra = width - table.shape[1]
    if extra <= 0:
        return table
    outside = np.concatenate([np.arange(stop, total), np.arange(0, start)])[:extra]
    if outside.size < extra:
        raise ValueError(f"cannot widen a feature list to {width} columns with {total} ids")
    return np.concatenate([table, np.tile(outside, (table.shape[0], 1))], axis=1)


def unmatched(table: np.ndarray, width: int) -> np.ndarray:
    """``table`` widened to ``width`` columns with -1 (an id no list holds: zero features)."""
    extra = width - table.shape[1]
    if extra <= 0:
        return table
    return np.concatenate([table, np.full((table.shape[0], extra), -1, table.dtype)], axis=1)


def _offsets(sizes) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def join_tables(parts, id_offset, chan_offset, n_chan):
    """The shanks' cluster tables as one (ids and channels offset, templates on their shank's
    channels), and the template-indexed feature lists of spikes.zarr likewise.

    Feature lists of different widths (a shank with fewer templates or channels) are widened to
    the widest: in the exported lists with ids of other shanks, in the spikes' lists with -1, so
    the extra columns hold zero features.
    """

    total_ids, total_chan = int(sum(p.table.n for p in parts)), int(sum(n_chan))
    pc_width = max(p.table.pc_feature_ind.shape[1] for p in parts)
    tf_width = max(p.table.template_feature_ind.shape[1] for p in parts)
    nt0 = parts[0].table.templates.shape[1]
    templates = np.zeros((total_ids, nt0, total_chan), np.float32)
    src_pc = np.full((total_ids, pc_width), -1, np.int64)
    src_tf = np.full((total_ids, tf_width), -1, np.int64)
    pc_ind, tf_ind = [], []
    for s, p in enumerate(parts):
        if int(p.src_pc_ind.shape[0]) > p.table.n:
            raise ValueError(f"shank {s} has more templates than clusters; cannot join")
        ids = (int(id_offset[s]), int(id_offset[s]) + p.table.n)
        chans = (int(chan_offset[s]), int(chan_offset[s]) + n_chan[s])
        templates[ids[0] : ids[1], :, chans[0] : chans[1]] = p.table.templates
        t = slice(ids[0], ids[0] + p.src_pc_ind.shape[0])
        src_pc[t] = unmatched(p.src_pc_ind + chans[0], pc_width)
        src_tf[t] = unmatched(p.src_tf_ind + ids[0], tf_width)
        pc_ind.append(widen(p.table.pc_feature_ind + chans[0], pc_width, *chans, total_chan))
        tf_ind.append(widen(p.table.template_feature_ind + ids[0], tf_width, *ids, total_ids))
    table = ClusterTable(
        templates,
        _block_diagonal([p.table.similar for p in parts]).astype(np.float32),
        np.concatenate(pc_ind),
        np.concatenate(tf_ind),
        np.concatenate([p.table.good for p in parts]),
        np.concatenate([p.table.contamination for p in parts]),
        total_ids,
        sum((tuple(p.table.reasons) for p in parts), ())
        if all(p.table.reasons for p in parts)
        else (),
    )
    return table, src_pc, src_tf


def join_sources(parts: list, report: dict):
    """One :class:`~kilosnake.export.sources.ExportSources` from the shanks' (in shank order).

    Per-spike scalars (time, template, amplitude, label, keep) of all shanks are held in memory
    (about 30 bytes a spike); the features stay in the shanks' stores (:class:`JoinedRows`).

    Parameters
    ----------
    parts : list of ExportSources
        What :func:`kilosnake.export.sources.read_sources` read for each shank.
    report : dict
        The whole recording's ``input.json`` (raw file, channel count, duration).
    """

    id_offset = _offsets([p.table.n for p in parts])
    n_chan = [int(p.whitening.shape[0]) for p in parts]
    chan_offset = _offsets(n_chan)
    whole = [np.asarray(p.spikes["time"][...], np.uint64) for p in parts]
    shank = np.concatenate([np.full(t.size, s, np.int64) for s, t in enumerate(whole)])
    rows = np.concatenate([np.arange(t.size, dtype=np.int64) for t in whole])
    order = np.lexsort((shank, np.concatenate(whole)))  # time order; shank order at ties

    def joined(read, offset=False):
        values = [
            np.asarray(read(p)) + (id_offset[s] if offset else 0) for s, p in enumerate(parts)
        ]
        return np.concatenate(values)[order]

    table, src_pc, src_tf = join_tables(parts, id_offset, chan_offset, n_chan)
    spikes = {
        "time": np.concatenate(whole)[order],
        "template": joined(lambda p: p.spikes["template"][...].astype(np.int64), True),
        "amplitude": joined(lambda p: p.spikes["amplitude"][...]),
    }
    for name in ("pc_features", "template_features"):
        spikes[name] = JoinedRows([p.spikes[name] for p in parts], shank[order], rows[order])
    geometry = {k: np.concatenate([p.geometry[k] for p in parts]) for k in parts[0].geometry}
    logger.info(
        "joining %d shanks: %s clusters, %s channels, %d spikes",
        len(parts),
        [p.table.n for p in parts],
        n_chan,
        order.size,
    )
    return ExportSources(
        spikes,
        joined(lambda p: p.labels[...].astype(np.int64), True),
        joined(lambda p: p.keep[...].astype(bool)),
        table,
        parts[0].nt0min,
        geometry,
        _block_diagonal([p.whitening for p in parts]),
        report,
        src_pc,
        src_tf,
    )


def recording_sources(spikes, templates, whitening, input_json, split, cutoff, shank_inputs):
    """What the export of a recording reads (:class:`~kilosnake.export.sources.ExportSources`):
    one path per store for a recording sorted whole, or one path per shank in each list, in
    shank order, or one shank set per store (``shank_inputs``: the shanks' ``input.json``)."""

    lists = [
        [str(p)] if isinstance(p, (str, Path)) else [str(x) for x in p]
        for p in (spikes, templates, whitening, split, cutoff)
    ]
    lists = [[s for path in paths for s in shank_stores(path)] for paths in lists]
    if len(lists[0]) == 1:
        return read_sources(
            lists[0][0], lists[1][0], lists[2][0], input_json, lists[3][0], lists[4][0]
        )
    shank_inputs = [shank_inputs] if isinstance(shank_inputs, (str, Path)) else shank_inputs
    parts = [
        read_sources(sp, tp, wp, ip, sl, cu)
        for sp, tp, wp, sl, cu, ip in zip(*lists, shank_inputs, strict=True)
    ]
    return join_sources(parts, read_input_json(input_json))


def export_recording(
    spikes, templates, whitening, input_json, split, cutoff, shank_inputs, params: dict, out
) -> dict:
    """The ``export_phy`` stage of a recording sorted whole or shank by shank (the stores as
    :func:`recording_sources` takes them).

    Returns the summary of :func:`kilosnake.export.writer.publish_phy_folder`.
    """
    sources = recording_sources(
        spikes, templates, whitening, input_json, split, cutoff, shank_inputs
    )
    return publish_phy_folder(sources, params, out)
