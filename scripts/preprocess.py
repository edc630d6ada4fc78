"""Rule preprocess (and preprocess_block): filter, reference and whiten every batch (or one
time block's batches) into preprocessed.zarr (or its block store)."""

from kilosnake.preprocess.traces import run_preprocess
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
block = tuple(snakemake.params.get("block", (0, 1)))
with (
    stage_logging(snakemake.log[0], "preprocess", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        run_preprocess(i["info"], i["whitening"], pk, o["out"], block=block)
