"""What the export reads: the sort's stores, and the kept spikes in time order."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from kilosnake.curation.data import read_probe_geometry, read_templates
from kilosnake.export.tables import ClusterTable, PhyExportError
from kilosnake.io.input_json import read_input_json
from kilosnake.io.store import open_store
from kilosnake.io.streaming import (
    BLOCK_ROWS,
    MappedLabels,
    blocks,
    npy_blocks,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# reading the stores


@dataclasses.dataclass
class ExportSources:
    """Everything the export reads; per-spike arrays stay in their stores (read in blocks)."""

    spikes: object  # zarr group of spikes.zarr
    labels: object  # zarr array (n,): cluster of every spike after merges and splits
    keep: object  # zarr array (n,): spike kept by the score cutoff
    table: ClusterTable
    nt0min: int
    geometry: dict
    whitening: np.ndarray
    report: dict
    src_pc_ind: np.ndarray
    src_tf_ind: np.ndarray

    @property
    def n_spikes(self) -> int:
        return int(self.spikes["time"].shape[0])


def read_sources(
    spikes_zarr, templates_zarr, whitening_zarr, input_json, split_zarr, cutoff_zarr
) -> ExportSources:
    """Open the stores and read the per-cluster arrays of the export."""
    sp, sg, cg = open_store(spikes_zarr), open_store(split_zarr), open_store(cutoff_zarr)
    counts = {
        "spikes.zarr": sp["time"].shape[0],
        "split.zarr": sg["cluster"].shape[0],
        "cutoff.zarr": cg["keep"].shape[0],
    }
    if len(set(counts.values())) != 1:
        raise PhyExportError(
            "spike counts differ: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
    table = ClusterTable(
        np.asarray(sg["templates"][...], np.float32),
        np.asarray(sg["similar_templates"][...], np.float32),
        np.asarray(sg["pc_feature_ind"][...], np.int64),
        np.asarray(sg["template_feature_ind"][...], np.int64),
        np.asarray(cg["good"][...], bool),
        np.asarray(cg["contamination"][...], np.float64),
        int(sg.attrs["n_clusters"]),
        tuple(cg.attrs.get("label_reason", ())),
        np.asarray(cg["noise"][...], bool) if "noise" in cg else None,
    )
    wg = open_store(whitening_zarr)
    n_chan = {
        "whitening": wg["whitening"].shape[0],
        "chan_map": wg["chan_map"].shape[0],
        "templates": table.templates.shape[2],
    }
    if len(set(n_chan.values())) != 1:
        raise PhyExportError(f"channel counts differ between stores: {n_chan}")
    return ExportSources(
        sp,
        final_labels(sg["cluster"], cg),
        cg["keep"],
        table,
        int(read_templates(templates_zarr).nt0min),
        read_probe_geometry(whitening_zarr),
        np.asarray(wg["whitening"][...], np.float64),
        read_input_json(input_json),
        np.asarray(sp["pc_feature_ind"][...], np.int64),
        np.asarray(sp["template_feature_ind"][...], np.int64),
    )


def final_labels(split_labels, cutoff_group):
    """The cluster of every spike: the split's, through the cutoff stage's folds."""
    if "cluster_of" not in cutoff_group:
        return split_labels
    cluster_of = np.asarray(cutoff_group["cluster_of"][...], np.uint32)
    if np.array_equal(cluster_of, np.arange(cluster_of.size)):
        return split_labels
    return MappedLabels(split_labels, cluster_of)


def kept_order(time: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices of the kept spikes in ascending time (stable)."""
    idx = np.flatnonzero(keep)
    t = time[idx]
    if t.size > 1 and np.any(np.diff(t.astype(np.int64)) < 0):
        logger.warning("spikes.zarr is not sorted by time; sorting the export in memory")
        idx = idx[np.argsort(t, kind="stable")]
    return idx


def is_sorted_in_blocks(array, step: int = BLOCK_ROWS) -> bool:
    """True when a per-spike array (Zarr or ``.npy`` blocks) never decreases."""
    last = None
    for _, block in blocks(array, step) if not isinstance(array, Path) else npy_blocks(array, step):
        if block.size == 0:
            continue
        b = block.astype(np.int64)
        if (last is not None and b[0] < last) or np.any(np.diff(b) < 0):
            return False
        last = b[-1]
    return True


@dataclasses.dataclass
class KeptSpikes:
    """The kept spikes in Phy's order (ascending time), served in blocks of indices."""

    n: int  # kept spikes
    order: np.ndarray | None  # all kept indices when spikes.zarr is not sorted, else None
    keep: object  # zarr array (n,) bool
    step: int = BLOCK_ROWS

    def blocks(self):
        """Indices into spikes.zarr of consecutive blocks of kept spikes."""
        if self.order is not None:
            for s in range(0, self.order.size, self.step):
                yield self.order[s : s + self.step]
            return
        for start, keep in blocks(self.keep, self.step):
            idx = np.flatnonzero(keep)
            if idx.size:
                yield idx + start


def kept_spikes(s: ExportSources, step: int = BLOCK_ROWS) -> KeptSpikes:
    """Count the kept spikes; fall back to an in-memory order when spikes.zarr is unsorted."""
    n = sum(int(np.count_nonzero(k)) for _, k in blocks(s.keep, step))
    if is_sorted_in_blocks(s.spikes["time"], step):
        return KeptSpikes(n, None, s.keep, step)
    order = kept_order(np.asarray(s.spikes["time"][...], np.uint64), np.asarray(s.keep[...], bool))
    return KeptSpikes(n, order, s.keep, step)
