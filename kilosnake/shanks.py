"""Multi-shank probes: every shank sorted on its own, the shanks joined in one Phy folder.

Shanks of a probe are far apart (Neuropixels 2.0: 250 µm), so no unit spans two of them. The
workflow therefore sorts shank ``k`` (the ``k``-th of the probe's sorted shank ids) as the
sub-recording ``<recording>/shank<k>``: its ``input.json`` is the recording's with the probe
restricted to that shank (:func:`write_shank_input`), and every stage from whitening to the
score cutoff runs on it unchanged, in its own job, under ``results/<recording>/shank<k>/``. The
seed of shank ``k`` is ``seed + k`` (:func:`shank_seed`): it depends on the shank, not on the job,
so the result does not depend on how the work is laid out.

How the shank-and-stage jobs are laid out is an execution choice (``scatter_shanks``); both
layouts run the same per-shank computations on the same inputs, so the Phy folder is the same:

* ``scatter_shanks: true``: one job per shank and stage, on the sub-recording
  ``<recording>/shank<k>``: every stage writes ``results/<recording>/shank<k>/<store>.zarr``;
* ``scatter_shanks: false``: one job per stage for the recording, which loops over the shanks
  (:func:`per_shank`): its store ``results/<recording>/<store>.zarr`` is a *shank set*, a Zarr
  group whose child groups ``shank<k>`` are the shanks' stores (each as a job of the other layout
  writes it); the shanks' ``input.json`` are ``results/<recording>/shank<k>/input.json`` in
  both layouts.

The export joins the shanks (:func:`join_sources`): spikes in time order (ties by shank), cluster
and template ids of shank ``k`` offset by the cluster counts of the shanks before it (ids stay
unique), channels shank after shank (``channel_map``, ``channel_positions``, ``channel_shanks``
of every shank), templates placed on their shank's channels, the whitening matrix block-diagonal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_SUB = re.compile(r"^(?P<recording>[^/]+)/shank(?P<shank>[0-9]+)$")


def shank_ids(kcoords) -> np.ndarray:
    """The probe's distinct shank ids, sorted (shank index ``k`` is the ``k``-th)."""
    return np.unique(np.asarray(kcoords, dtype=np.float64))


def sub_recording(recording: str, shank: int) -> str:
    """The name of shank ``shank`` of ``recording`` in the workflow."""
    return f"{recording}/shank{int(shank)}"


def split_name(name: str) -> tuple[str, int | None]:
    """``(recording, shank index)`` of a workflow recording name (shank None: the whole one)."""
    m = _SUB.match(name)
    return (m["recording"], int(m["shank"])) if m else (name, None)


def shank_seed(seed: int, shank: int) -> int:
    """The seed of shank ``shank``: ``seed + shank``."""
    return int(seed) + int(shank)


def shank_input(report: dict, shank: int) -> dict:
    """``input.json`` content of shank ``shank``: the probe and per-channel arrays restricted."""
    from .probe import Probe

    probe = Probe.from_dict(report["probe"])
    ids = shank_ids(probe.kcoords)
    if not 0 <= shank < ids.size:
        raise ValueError(f"shank {shank} does not exist: the probe has {ids.size} shank(s) "
                         "after the excluded channels were left out")
    keep = np.flatnonzero(probe.kcoords == ids[shank])
    out = dict(report)
    out["probe"] = probe.subset(keep).to_dict()
    for key in ("rms", "saturation_fraction"):
        if key in report:
            out[key] = [report[key][i] for i in keep]
    out["shank"] = {"index": int(shank), "id": float(ids[shank]), "n_shanks": int(ids.size)}
    return out


def write_shank_input(input_json, shank: int, out) -> None:
    """Write the ``input.json`` of shank ``shank`` (see :func:`shank_input`)."""
    from .checks import read_input_json, write_json_atomic

    sub = shank_input(read_input_json(input_json), int(shank))
    logger.info("shank %d (id %g of %d): %d channels", shank, sub["shank"]["id"],
                sub["shank"]["n_shanks"], len(sub["probe"]["chan_map"]))
    write_json_atomic(sub, out)


def probe_shank_count(probe_source) -> int:
    """Shanks of a probe file (1 when it cannot be read: check_input then says why)."""
    from .probe import load_probe

    try:
        return int(shank_ids(load_probe(probe_source).kcoords).size)
    except Exception:  # a missing or broken probe fails in check_input with its message
        return 1


# --------------------------------------------------------------------------------------------
# one job for every shank: shank sets


#: attribute of a shank set: the number of shanks it holds
SHANK_SET = "shank_set"


def shank_set_size(path) -> int | None:
    """Shanks in the shank set at ``path``, or None when ``path`` is not one."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return None
    value = json.loads(meta.read_text()).get("attributes", {}).get(SHANK_SET)
    return None if value is None else int(value)


def shank_stores(path) -> list[str]:
    """The shanks' stores of a shank set, in shank order; ``[path]`` for any other store."""
    n = shank_set_size(path)
    return [str(path)] if n is None else [f"{path}/shank{k}" for k in range(n)]


def shard(value, shank: int, n_shanks: int):
    """What shank ``shank`` of a loop job reads for an input ``value``: a shank set's store of
    that shank, the ``shank``-th of a per-shank list (``input.json`` files), else ``value``."""
    if isinstance(value, (list, tuple)):
        if value and all(shank_set_size(v) is not None for v in value):
            return [shard(v, shank, n_shanks) for v in value]
        return value[shank] if len(value) == n_shanks else value
    if isinstance(value, (str, Path)) and shank_set_size(value) is not None:
        return f"{value}/shank{shank}"
    return value


def stack_images(paths, out) -> None:
    """The PNG images ``paths`` one above the other in ``out`` (the shanks' figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import numpy as np

    images = [mpimg.imread(p) for p in paths]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0)
              for im in images]
    mpimg.imsave(out, np.concatenate(padded, axis=0))


@contextlib.contextmanager
def per_shank(n_shanks: int | None, p: dict, inputs: dict, stores: dict, figures: dict = None):
    """The calls a stage job makes: one for a recording sorted whole (or one shank of it),
    one per shank for a loop job on a multi-shank recording.

    Yields a list of ``(inputs, outputs, p)``, one per call: ``inputs`` with shank sets and
    per-shank lists resolved to the shank's (:func:`shard`), ``outputs`` the shank's store in
    each output shank set (written at ``<store>.tmp/shank<k>``) and the shank's figures, ``p``
    with the shank's seed. When the calls are done the shank sets are completed and renamed into
    place, and each figure is the shanks' figures stacked; on an error nothing is left.

    Parameters
    ----------
    n_shanks : int or None
        Shanks to loop over; None (or 1) for a single call with everything as given.
    p : dict
        The stage's resolved parameters (the recording's seed).
    inputs : dict
        The job's inputs by name.
    stores : dict
        Output stores by name.
    figures : dict, optional
        Output images by name.
    """
    figures = figures or {}
    if not n_shanks or n_shanks == 1:
        yield [(dict(inputs), {**stores, **figures}, p)]
        return
    import zarr

    from .store import publish

    tmps = {name: Path(f"{path}.tmp") for name, path in stores.items()}
    parts = {name: [Path(f"{path}.shank{k}.png") for k in range(n_shanks)]
             for name, path in figures.items()}
    for tmp in tmps.values():
        if tmp.exists():
            shutil.rmtree(tmp)
        zarr.open_group(str(tmp), mode="w", zarr_format=3)
    calls = []
    for k in range(n_shanks):
        outputs = {name: str(tmp / f"shank{k}") for name, tmp in tmps.items()}
        outputs.update({name: str(files[k]) for name, files in parts.items()})
        calls.append(({name: shard(v, k, n_shanks) for name, v in inputs.items()}, outputs,
                      {**p, "seed": shank_seed(p["seed"], k)}))
    try:
        yield calls
        for name, files in parts.items():
            stack_images(files, figures[name])
        for name, tmp in tmps.items():
            zarr.open_group(str(tmp), mode="r+").attrs.update(
                {SHANK_SET: int(n_shanks), "complete": True})
            publish(tmp, Path(stores[name]))
    except BaseException:
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for files in parts.values():
            for f in files:
                f.unlink(missing_ok=True)


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
            raise ValueError(f"the shanks' feature arrays have shapes {sorted(heads)} before "
                             "their last axis; they cannot be joined in one Phy folder")
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
                part = np.asarray(array[int(r[0]):int(r[-1]) + 1])[r - r[0]]
                out[on, ..., :part.shape[-1]] = part
        return out


def _block_diagonal(blocks) -> np.ndarray:
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n), np.asarray(blocks[0]).dtype)
    at = 0
    for b in blocks:
        out[at:at + b.shape[0], at:at + b.shape[1]] = b
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
    from .export import ClusterTable

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
        templates[ids[0]:ids[1], :, chans[0]:chans[1]] = p.table.templates
        t = slice(ids[0], ids[0] + p.src_pc_ind.shape[0])
        src_pc[t] = unmatched(p.src_pc_ind + chans[0], pc_width)
        src_tf[t] = unmatched(p.src_tf_ind + ids[0], tf_width)
        pc_ind.append(widen(p.table.pc_feature_ind + chans[0], pc_width, *chans, total_chan))
        tf_ind.append(widen(p.table.template_feature_ind + ids[0], tf_width, *ids, total_ids))
    table = ClusterTable(
        templates, _block_diagonal([p.table.similar for p in parts]).astype(np.float32),
        np.concatenate(pc_ind), np.concatenate(tf_ind),
        np.concatenate([p.table.good for p in parts]),
        np.concatenate([p.table.contamination for p in parts]), total_ids)
    return table, src_pc, src_tf


def join_sources(parts: list, report: dict):
    """One :class:`~kilosnake.export.ExportSources` from the shanks' (in shank order).

    Per-spike scalars (time, template, amplitude, label, keep) of all shanks are held in memory
    (about 30 bytes a spike); the features stay in the shanks' stores (:class:`JoinedRows`).

    Parameters
    ----------
    parts : list of ExportSources
        What :func:`kilosnake.export.read_sources` read for each shank.
    report : dict
        The whole recording's ``input.json`` (raw file, channel count, duration).
    """
    from .export import ExportSources

    id_offset = _offsets([p.table.n for p in parts])
    n_chan = [int(p.whitening.shape[0]) for p in parts]
    chan_offset = _offsets(n_chan)
    whole = [np.asarray(p.spikes["time"][...], np.uint64) for p in parts]
    shank = np.concatenate([np.full(t.size, s, np.int64) for s, t in enumerate(whole)])
    rows = np.concatenate([np.arange(t.size, dtype=np.int64) for t in whole])
    order = np.lexsort((shank, np.concatenate(whole)))  # time order; shank order at ties

    def joined(read, offset=False):
        values = [np.asarray(read(p)) + (id_offset[s] if offset else 0)
                  for s, p in enumerate(parts)]
        return np.concatenate(values)[order]

    table, src_pc, src_tf = join_tables(parts, id_offset, chan_offset, n_chan)
    spikes = {"time": np.concatenate(whole)[order],
              "template": joined(lambda p: p.spikes["template"][...].astype(np.int64), True),
              "amplitude": joined(lambda p: p.spikes["amplitude"][...])}
    for name in ("pc_features", "template_features"):
        spikes[name] = JoinedRows([p.spikes[name] for p in parts], shank[order], rows[order])
    geometry = {k: np.concatenate([p.geometry[k] for p in parts]) for k in parts[0].geometry}
    logger.info("joining %d shanks: %s clusters, %s channels, %d spikes", len(parts),
                [p.table.n for p in parts], n_chan, order.size)
    return ExportSources(
        spikes, joined(lambda p: p.labels[...].astype(np.int64), True),
        joined(lambda p: p.keep[...].astype(bool)), table, parts[0].nt0min, geometry,
        _block_diagonal([p.whitening for p in parts]), report, src_pc, src_tf)


def export_recording(spikes, templates, whitening, input_json, split, cutoff, shank_inputs,
                     params: dict, out) -> dict:
    """The ``export_phy`` stage of a recording sorted whole (one path per store) or shank by
    shank (one path per shank in each list, in shank order, or one shank set per store;
    ``shank_inputs`` the shanks' ``input.json``).

    Returns the summary of :func:`kilosnake.export.export_phy`.
    """
    from .export import export_phy, publish_phy_folder, read_sources
    from .checks import read_input_json

    lists = [[str(p)] if isinstance(p, (str, Path)) else [str(x) for x in p]
             for p in (spikes, templates, whitening, split, cutoff)]
    lists = [[s for path in paths for s in shank_stores(path)] for paths in lists]
    if len(lists[0]) == 1:
        return export_phy(lists[0][0], lists[1][0], lists[2][0], input_json, lists[3][0],
                          lists[4][0], params, out)
    shank_inputs = [shank_inputs] if isinstance(shank_inputs, (str, Path)) else shank_inputs
    parts = [read_sources(sp, tp, wp, ip, sl, cu) for sp, tp, wp, sl, cu, ip in
             zip(*lists, shank_inputs, strict=True)]
    return publish_phy_folder(join_sources(parts, read_input_json(input_json)), params, out)
