"""Rule gather_spikes: the final-pass block stores' spikes, appended in time order."""

from kilosnake.runtime.logs import stage_logging
from kilosnake.sorting.gather import gather_spikes
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "gather_spikes", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        gather_spikes(list(i["blocks"]), o["out"], pk)
