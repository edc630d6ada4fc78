"""Rule drift: displacement per batch and depth block → drift.zarr, and drift.png."""

from kilosnake.drift.estimate import run_drift
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "drift", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks,
        p,
        dict(snakemake.input.items()),
        {"store": snakemake.output.store},
        {"plot": snakemake.output.plot},
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank (their plots stacked)
        run_drift(i["preprocessed"], i["whitening"], o["store"], o["plot"], pk)
