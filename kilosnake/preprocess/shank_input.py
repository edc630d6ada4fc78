"""Rule shank_input: input.json of one shank of a multi-shank recording (the probe restricted to
the shank).
"""

from __future__ import annotations

import logging

import numpy as np

from kilosnake.io.input_json import probe_from_input_json, read_input_json, write_json_atomic

logger = logging.getLogger(__name__)


def shank_input(report: dict, shank: int) -> dict:
    """``input.json`` content of shank ``shank``: the probe and per-channel arrays restricted."""

    probe = probe_from_input_json(report)
    ids = probe.shank_ids()
    if not 0 <= shank < ids.size:
        raise ValueError(
            f"shank {shank} does not exist: the probe has {ids.size} shank(s) "
            "after the excluded channels were left out"
        )
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

    sub = shank_input(read_input_json(input_json), int(shank))
    logger.info(
        "shank %d (id %g of %d): %d channels",
        shank,
        sub["shank"]["id"],
        sub["shank"]["n_shanks"],
        len(sub["probe"]["chan_map"]),
    )
    write_json_atomic(sub, out)
