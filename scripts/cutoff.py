"""Rule cutoff: per-cluster score cutoff and good/mua labels → cutoff.zarr."""
from kilosnake.curation.cutoff import run_cutoff
from kilosnake.logs import stage_logging

p = snakemake.params.p
with stage_logging(snakemake.log[0], "cutoff", p):
    run_cutoff(snakemake.input.spikes, snakemake.input.split, snakemake.input.whitening,
               snakemake.input.info, p, p["Th"], snakemake.output[0])
