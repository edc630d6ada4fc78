"""Rule drift: displacement per batch and depth block → drift.zarr, and drift.png."""
from kilosnake.drift import run_drift
from kilosnake.logs import stage_logging

p = snakemake.params.p
with stage_logging(snakemake.log[0], "drift", p):
    run_drift(snakemake.input.preprocessed, snakemake.input.whitening, snakemake.output.store,
              snakemake.output.plot, p)
