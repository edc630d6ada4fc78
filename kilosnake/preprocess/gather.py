"""Rule gather_preprocessed: preprocessed.zarr of a scattered run, pointing at its block stores (no
traces copied).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kilosnake.io.blocks import _sorted_blocks, join_row_groups, stage_attrs
from kilosnake.io.probe import probe_from_store, write_probe_arrays
from kilosnake.io.store import writing_store

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# preprocessed traces


def gather_preprocessed(block_paths, out, p: dict, device: str = "cpu") -> None:
    """Write ``preprocessed.zarr`` pointing at the block stores (no traces copied); a group
    of per-spike rows that every block made (the drift detections) is joined and copied.

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

    groups = _sorted_blocks(block_paths)
    first = groups[0][0]
    n_samples = int(first.attrs["n_samples"])
    blocks, expected = [], 0
    for g, path in groups:
        start, stop = int(g.attrs["first_sample"]), int(g.attrs["stop_sample"])
        if start != expected:
            raise ValueError(
                f"block store {str(path)!r} starts at sample {start}, expected {expected}"
            )
        expected = stop
        if stop > start:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(Path(out).parent))
            blocks.append({"path": Path(rel).as_posix(), "start": start, "stop": stop})
    if expected != n_samples:
        raise ValueError(f"the block stores end at sample {expected}, the recording at {n_samples}")
    attrs = stage_attrs(first.attrs)
    attrs.update(n_channels=int(first["traces"].shape[1]), blocks=blocks)
    with writing_store(out, "preprocess", p, device, p.get("seed"), attrs) as g:
        write_probe_arrays(g, probe_from_store(first))
        for name in sorted(set(first.group_keys())):
            join_row_groups([block for block, _ in groups], name, g)
    logger.info("preprocessed.zarr: %d samples in %d block stores", n_samples, len(blocks))
