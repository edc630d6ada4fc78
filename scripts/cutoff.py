"""Rule cutoff: per-cluster score cutoff and good/mua labels → cutoff.zarr."""

from kilosnake.curation.cutoff import run_cutoff
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "cutoff", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        run_cutoff(
            i["spikes"],
            i["split"],
            i["whitening"],
            i["info"],
            pk,
            pk["Th"],
            o["out"],
            workers=snakemake.threads,
        )
