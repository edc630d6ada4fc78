"""Rule final_pass (and final_pass_block): matching pursuit with the frozen templates over every
batch (or one time block's batches) → spikes.zarr (or its block store)."""

from kilosnake.runtime.logs import stage_logging
from kilosnake.sorting.final_pass import run_final_pass
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
block = tuple(snakemake.params.get("block", (0, 1)))
with (
    stage_logging(snakemake.log[0], "final_pass", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        # drift is absent when the workflow has no drift rule
        run_final_pass(
            i["preprocessed"], i["templates"], o["out"], pk, i.get("drift") or None, block=block
        )
