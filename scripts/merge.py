"""Rule merge: merge templates whose spike trains share a refractory period → merge.zarr."""
from kilosnake.curation.merge import run_merge
from kilosnake.logs import stage_logging

p = snakemake.params.p
with stage_logging(snakemake.log[0], "merge", p):
    run_merge(snakemake.input.spikes, snakemake.input.info, p, snakemake.output[0])
