"""Rule learn: online template learning over the batches → templates.zarr."""
from kilosnake.logs import stage_logging
from kilosnake.sorting.learn import run_learn

p = snakemake.params.p
drift = snakemake.input.get("drift") or None  # absent when the workflow has no drift rule
with stage_logging(snakemake.log[0], "learn", p):
    run_learn(snakemake.input.preprocessed, snakemake.input.detect, snakemake.output[0], p,
              drift)
