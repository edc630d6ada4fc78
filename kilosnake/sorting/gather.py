"""Rule gather_spikes: the final-pass block stores' spikes, appended in time order into
spikes.zarr."""

from __future__ import annotations

import logging

from kilosnake.io.blocks import _sorted_blocks, stage_attrs
from kilosnake.io.store import AppendableArray, write_array, writing_store
from kilosnake.sorting.final_pass import SPIKE_COLUMNS

logger = logging.getLogger(__name__)


#: spikes copied per step by :func:`gather_spikes`
COPY_ROWS = 1 << 16


# --------------------------------------------------------------------------------------------
# spikes


def gather_spikes(block_paths, out, p: dict, device: str = "cpu") -> int:
    """Append the spikes of the final-pass block stores, in block order, into ``spikes.zarr``.

    The result has the arrays, chunks and attributes of a single job's store. Returns the spike
    count.
    """

    groups = [g for g, _ in _sorted_blocks(block_paths)]
    first = groups[0]
    attrs = stage_attrs(first.attrs)
    attrs.pop("n_spikes", None)
    per_spike = list(SPIKE_COLUMNS) + ["template_features", "pc_features"]
    with writing_store(out, "final_pass", p, device, p.get("seed"), attrs) as g:
        columns = {
            name: AppendableArray(
                g,
                name,
                tuple(first[name].shape[1:]),
                first[name].dtype,
                compressors=first[name].compressors or None,
            )
            for name in per_spike
        }
        total = 0
        for block in groups:
            n = int(block["time"].shape[0])
            for name, column in columns.items():
                for start in range(0, n, COPY_ROWS):
                    column.append(block[name][start : min(start + COPY_ROWS, n)])
            total += n
        for name in ("template_feature_ind", "pc_feature_ind", "similar_templates"):
            write_array(g, name, first[name][...])
        g.attrs["n_spikes"] = int(total)
    logger.info("spikes.zarr: %d spikes from %d block stores", total, len(groups))
    return total
