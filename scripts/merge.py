"""Rule merge: merge templates whose spike trains share a refractory period → merge.zarr."""

from kilosnake.curation.merge import run_merge
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "merge", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        run_merge(i["spikes"], i["info"], pk, o["out"])
