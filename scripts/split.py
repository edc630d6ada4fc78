"""Rule split: split clusters with bimodal PC features → split.zarr."""
from kilosnake.curation.split import run_split
from kilosnake.logs import stage_logging

p = snakemake.params.p
with stage_logging(snakemake.log[0], "split", p):
    run_split(snakemake.input.spikes, snakemake.input.templates, snakemake.input.merge,
              snakemake.input.info, p, snakemake.output[0])
