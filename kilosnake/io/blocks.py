"""Block stores of a scattered stage: which batches a block holds and the attributes that say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kilosnake.io.store import open_store, own_attrs, write_array

#: attributes that only block stores carry (left out of the gathered store)
BLOCK_ATTRS = ("block", "n_blocks", "first_batch", "stop_batch", "first_sample", "stop_sample")


def block_attrs(block: int, n_blocks: int, batches: range, NT: int, n_samples: int) -> dict:
    """The attributes that say which part of the recording a block store holds."""
    return {
        "block": int(block),
        "n_blocks": int(n_blocks),
        "first_batch": batches.start,
        "stop_batch": batches.stop,
        "first_sample": min(batches.start * NT, n_samples),
        "stop_sample": min(batches.stop * NT, n_samples),
    }


def stage_attrs(attrs) -> dict:
    """A store's own attributes, without provenance and block attributes."""
    return {k: v for k, v in own_attrs(attrs).items() if k not in BLOCK_ATTRS}


def _sorted_blocks(paths) -> list:
    """Open the block stores and order them by block index; check that they fit together."""
    groups = sorted(
        ((open_store(p), Path(p)) for p in paths), key=lambda gp: int(gp[0].attrs["block"])
    )
    n_blocks = {int(g.attrs["n_blocks"]) for g, _ in groups}
    found = [int(g.attrs["block"]) for g, _ in groups]
    if len(n_blocks) != 1 or found != list(range(next(iter(n_blocks)))):
        raise ValueError(
            f"block stores {[str(p) for p in paths]} are not blocks 0..n-1 of one "
            f"scatter (blocks {found}, of {sorted(n_blocks)})"
        )
    return groups


def join_row_groups(groups, name: str, target) -> bool:
    """Group ``name`` of every block store in ``groups`` (in block order), its arrays joined
    along axis 0, written into ``target`` with the first block's attributes. Nothing is
    written, and False returned, unless every block has the group (with the same arrays)."""
    parts = [g[name] for g in groups if name in g]
    if not parts or len(parts) != len(groups):
        return False
    arrays = sorted(parts[0].array_keys())
    if any(sorted(part.array_keys()) != arrays for part in parts):
        return False
    joined = target.create_group(name)
    joined.attrs.update(dict(parts[0].attrs))
    for key in arrays:
        write_array(joined, key, np.concatenate([np.asarray(part[key][...]) for part in parts]))
    return True
