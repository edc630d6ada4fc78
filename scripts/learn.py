"""Rule learn: online template learning over the batches → templates.zarr."""

from kilosnake.runtime.logs import stage_logging
from kilosnake.sorting.learn import run_learn
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "learn", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        # drift is absent when the workflow has no drift rule
        run_learn(i["preprocessed"], i["detect"], o["out"], pk, i.get("drift") or None)
