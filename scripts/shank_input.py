"""Rule shank_input: input.json of one shank of a multi-shank recording."""

from kilosnake.preprocess.shank_input import write_shank_input
from kilosnake.runtime.logs import stage_logging

with stage_logging(snakemake.log[0], "shank_input", snakemake.params.p, inputs=snakemake.input):
    write_shank_input(snakemake.input[0], int(snakemake.wildcards.shank), snakemake.output[0])
