"""Rule scorecard: score the demo's Phy folder against its ground truth and print the scorecard."""

from kilosnake.groundtruth.score import write_scorecard
from kilosnake.runtime.logs import stage_logging

with stage_logging(snakemake.log[0], "scorecard", inputs=snakemake.input):
    print(write_scorecard(snakemake.input.phy, snakemake.input.gt, snakemake.output[0]), end="")
