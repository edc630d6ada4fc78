"""Scatter and gather over time blocks: the preprocess and final-pass stages as several jobs.

The batches of a recording are cut into ``n_blocks`` contiguous ranges (:func:`block_batches`).
A block job computes exactly the batches of its range, with the same margins as a single job, so
a batch's result does not depend on the job that computed it. The gathers copy no traces:

* ``preprocessed.zarr`` of a scattered run is a small store (no ``traces`` array) whose ``blocks``
  attribute lists the block stores (paths relative to the store's folder) and the samples each
  holds; :class:`BlockTraces` serves windows from them, so
  :class:`~kilosnake.preprocess.PreprocessedReader` reads a scattered store like a single one.
  A block store's traces are chunked by batch from its first batch on, so its chunks are the
  chunks a single job writes for those batches.
* ``spikes.zarr`` is the block stores' spikes appended in block (time) order
  (:func:`gather_spikes`): the same arrays, chunks and attributes as a single job's store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .store import AppendableArray, open_store, write_array, writing_store

logger = logging.getLogger(__name__)

#: attributes that only block stores carry (left out of the gathered store)
BLOCK_ATTRS = ("block", "n_blocks", "first_batch", "stop_batch", "first_sample", "stop_sample")
#: attributes every store gets from :func:`kilosnake.store.writing_store`
PROVENANCE_ATTRS = ("complete", "stage", "kilosnake_version", "params", "device", "seed")
#: spikes copied per step by :func:`gather_spikes`
COPY_ROWS = 1 << 16


def block_batches(n_batches: int, n_blocks: int, block: int) -> range:
    """Batches of block ``block`` out of ``n_blocks`` contiguous, near-equal ranges.

    Block ``i`` gets ``[i·nb // n, (i+1)·nb // n)``; with more blocks than batches some blocks
    are empty.
    """
    if n_blocks < 1 or not 0 <= block < n_blocks:
        raise ValueError(f"block {block} of {n_blocks} does not exist")
    return range(block * n_batches // n_blocks, (block + 1) * n_batches // n_blocks)


def block_attrs(block: int, n_blocks: int, batches: range, NT: int, n_samples: int) -> dict:
    """The attributes that say which part of the recording a block store holds."""
    return {"block": int(block), "n_blocks": int(n_blocks), "first_batch": batches.start,
            "stop_batch": batches.stop, "first_sample": min(batches.start * NT, n_samples),
            "stop_sample": min(batches.stop * NT, n_samples)}


def stage_attrs(attrs) -> dict:
    """A store's own attributes, without provenance and block attributes."""
    return {k: v for k, v in dict(attrs).items()
            if k not in BLOCK_ATTRS and k not in PROVENANCE_ATTRS}


def _sorted_blocks(paths) -> list:
    """Open the block stores and order them by block index; check that they fit together."""
    groups = sorted(((open_store(p), Path(p)) for p in paths),
                    key=lambda gp: int(gp[0].attrs["block"]))
    n_blocks = {int(g.attrs["n_blocks"]) for g, _ in groups}
    found = [int(g.attrs["block"]) for g, _ in groups]
    if len(n_blocks) != 1 or found != list(range(next(iter(n_blocks)))):
        raise ValueError(f"block stores {[str(p) for p in paths]} are not blocks 0..n-1 of one "
                         f"scatter (blocks {found}, of {sorted(n_blocks)})")
    return groups


# --------------------------------------------------------------------------------------------
# preprocessed traces


def gather_preprocessed(block_paths, out, p: dict, device: str = "cpu") -> None:
    """Write ``preprocessed.zarr`` pointing at the block stores (no traces copied).

    Parameters
    ----------
    block_paths : list of path
        Every block store of the scatter (any order).
    out : path
        The pointer store to write.
    p : dict
        Resolved parameters (provenance).
    device : str
        Recorded in the provenance.
    """
    from .preprocess import probe_from_group, write_probe_arrays

    groups = _sorted_blocks(block_paths)
    first = groups[0][0]
    n_samples = int(first.attrs["n_samples"])
    blocks, expected = [], 0
    for g, path in groups:
        start, stop = int(g.attrs["first_sample"]), int(g.attrs["stop_sample"])
        if start != expected:
            raise ValueError(f"block store {str(path)!r} starts at sample {start}, expected "
                             f"{expected}")
        expected = stop
        if stop > start:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(Path(out).parent))
            blocks.append({"path": Path(rel).as_posix(), "start": start, "stop": stop})
    if expected != n_samples:
        raise ValueError(f"the block stores end at sample {expected}, the recording at "
                         f"{n_samples}")
    attrs = stage_attrs(first.attrs)
    attrs.update(n_channels=int(first["traces"].shape[1]), blocks=blocks)
    with writing_store(out, "preprocess", p, device, p.get("seed"), attrs) as g:
        write_probe_arrays(g, probe_from_group(first))
    logger.info("preprocessed.zarr: %d samples in %d block stores", n_samples, len(blocks))


class BlockTraces:
    """The traces of a scattered ``preprocessed.zarr``: ``traces[lo:hi]`` read from its blocks.

    Supports what the readers need: ``shape``, ``dtype``, ``chunks`` and slicing along time.
    """

    def __init__(self, group, path):
        path = Path(path)
        self.blocks = []
        for b in group.attrs["blocks"]:
            store = open_store(path.parent / b["path"])
            self.blocks.append((int(b["start"]), int(b["stop"]), store["traces"]))
        n_channels = int(group.attrs["n_channels"])
        self.shape = (int(group.attrs["n_samples"]), n_channels)
        self.dtype = np.dtype(np.int16)
        self.chunks = self.blocks[0][2].chunks if self.blocks else (int(group.attrs["NT"]),
                                                                     n_channels)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("BlockTraces supports time slices [lo:hi] only")
        lo, hi, _ = key.indices(self.shape[0])
        out = np.zeros((max(0, hi - lo), self.shape[1]), dtype=self.dtype)
        for start, stop, traces in self.blocks:
            a, z = max(lo, start), min(hi, stop)
            if z > a:
                out[a - lo: z - lo] = traces[a - start: z - start]
        return out


def open_traces(group, path):
    """The ``traces`` array of a preprocessed store, or :class:`BlockTraces` of a scattered
    one."""
    if "blocks" in group.attrs:
        return BlockTraces(group, path)
    return group["traces"]


# --------------------------------------------------------------------------------------------
# spikes


def gather_spikes(block_paths, out, p: dict, device: str = "cpu") -> int:
    """Append the spikes of the final-pass block stores, in block order, into ``spikes.zarr``.

    The result has the arrays, chunks and attributes of a single job's store. Returns the spike
    count.
    """
    from .sorting.final_pass import SPIKE_COLUMNS

    groups = [g for g, _ in _sorted_blocks(block_paths)]
    first = groups[0]
    attrs = stage_attrs(first.attrs)
    attrs.pop("n_spikes", None)
    per_spike = list(SPIKE_COLUMNS) + ["template_features", "pc_features"]
    with writing_store(out, "final_pass", p, device, p.get("seed"), attrs) as g:
        columns = {name: AppendableArray(g, name, tuple(first[name].shape[1:]),
                                         first[name].dtype) for name in per_spike}
        total = 0
        for block in groups:
            n = int(block["time"].shape[0])
            for name, column in columns.items():
                for start in range(0, n, COPY_ROWS):
                    column.append(block[name][start:min(start + COPY_ROWS, n)])
            total += n
        for name in ("template_feature_ind", "pc_feature_ind", "similar_templates"):
            write_array(g, name, first[name][...])
        g.attrs["n_spikes"] = int(total)
    logger.info("spikes.zarr: %d spikes from %d block stores", total, len(groups))
    return total
