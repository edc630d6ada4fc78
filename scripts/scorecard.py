"""Rule scorecard: score the demo's Phy folder against its ground truth (the scorecard file; the
run's closing lines give its headline)."""

from kilosnake.groundtruth.score import write_scorecard
from kilosnake.runtime.logs import stage_logging

with stage_logging(snakemake.log[0], "scorecard", inputs=snakemake.input) as log:
    log.info("%s", write_scorecard(snakemake.input.phy, snakemake.input.gt, snakemake.output[0]))
