"""Rule input_report: input.json and the raw file → input_check.png."""

from kilosnake.report.input_check import write_input_check
from kilosnake.runtime.logs import stage_logging

with stage_logging(snakemake.log[0], "input_report", snakemake.params.p, inputs=snakemake.input):
    write_input_check(snakemake.input.info, snakemake.output[0])
