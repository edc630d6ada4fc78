"""Rule gather_preprocessed: preprocessed.zarr pointing at the preprocess block stores."""

from kilosnake.preprocess.gather import gather_preprocessed
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "gather_preprocessed", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        gather_preprocessed(list(i["blocks"]), o["out"], pk)
