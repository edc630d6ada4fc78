"""Rule whitening: channel offsets, covariance and the local whitening matrix."""

from kilosnake.preprocess.whitening import run_whitening
from kilosnake.runtime.logs import stage_logging
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "whitening", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        run_whitening(i["info"], pk, o["out"])
