"""Rule final_pass: matching pursuit with the frozen templates over every batch → spikes.zarr."""
from kilosnake.logs import stage_logging
from kilosnake.sorting.final_pass import run_final_pass

p = snakemake.params.p
drift = snakemake.input.get("drift") or None  # absent when the workflow has no drift rule
with stage_logging(snakemake.log[0], "final_pass", p):
    run_final_pass(snakemake.input.preprocessed, snakemake.input.templates, snakemake.output[0],
                   p, drift)
