"""Shank sets: one store per stage holding a child store for each shank, written by a job that
loops over the shanks.
"""

from __future__ import annotations

import json
from pathlib import Path

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
