"""Rule split: split clusters with bimodal PC features → split.zarr."""

from kilosnake.curation.split import run_split
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "split", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        run_split(
            i["spikes"],
            i["templates"],
            i["merge"],
            i["info"],
            pk,
            o["out"],
            workers=snakemake.threads,
        )
