"""Rule whitening: channel offsets, covariance and the local whitening matrix."""
from kilosnake.logs import stage_logging
from kilosnake.preprocess import run_whitening

p = snakemake.params.p
with stage_logging(snakemake.log[0], "whitening", p):
    run_whitening(snakemake.input.info, p, snakemake.output[0])
