"""Rule detect: universal waveforms, neighbourhoods, kernels and first templates → detect.zarr."""

from kilosnake.runtime.logs import stage_logging
from kilosnake.sorting.detect import run_detect
from kilosnake.workflow.shanks import per_shank

p = snakemake.params.p
with (
    stage_logging(snakemake.log[0], "detect", p, inputs=snakemake.input),
    per_shank(
        snakemake.params.shanks, p, dict(snakemake.input.items()), {"out": snakemake.output[0]}
    ) as calls,
):
    for i, o, pk in calls:  # one call, or one per shank
        # drift is absent when the workflow has no drift rule
        run_detect(i["preprocessed"], o["out"], pk, i.get("drift") or None)
