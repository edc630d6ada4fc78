"""Rule input_report: input.json and the raw file → input_check.png."""
from kilosnake.runtime.logs import stage_logging
from kilosnake.report.input_check import write_input_check

with stage_logging(snakemake.log[0], "input_report", snakemake.params.p):
    write_input_check(snakemake.input.info, snakemake.output[0])
