"""Rule preprocess: filter, reference and whiten every batch into preprocessed.zarr."""
from kilosnake.logs import stage_logging
from kilosnake.preprocess import run_preprocess

p = snakemake.params.p
with stage_logging(snakemake.log[0], "preprocess", p):
    run_preprocess(snakemake.input.info, snakemake.input.whitening, p, snakemake.output[0])
