"""Rule detect: universal waveforms, neighbourhoods, kernels and first templates → detect.zarr."""
from kilosnake.logs import stage_logging
from kilosnake.sorting.detect import run_detect

p = snakemake.params.p
drift = snakemake.input.get("drift") or None  # absent when the workflow has no drift rule
with stage_logging(snakemake.log[0], "detect", p):
    run_detect(snakemake.input.preprocessed, snakemake.output[0], p, drift)
