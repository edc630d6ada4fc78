"""Rule demo_recording: generate the demo recording and its ground truth."""

from pathlib import Path

from kilosnake.groundtruth.generate import generate
from kilosnake.runtime.logs import stage_logging

with stage_logging(snakemake.log[0], "demo_recording", {"seed": snakemake.params.seed}, inputs=()):
    generate(
        snakemake.wildcards.preset,
        Path(snakemake.output.dat).parent,
        name=snakemake.wildcards.preset,
        seed=snakemake.params.seed,
    )
