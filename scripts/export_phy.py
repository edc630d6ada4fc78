"""Rule export_phy: write, validate and publish the Phy folder."""
from kilosnake.export import export_phy
from kilosnake.logs import stage_logging

p, i = snakemake.params.p, snakemake.input
with stage_logging(snakemake.log[0], "export_phy", p):
    export_phy(i.spikes, i.templates, i.whitening, i.info, i.split, i.cutoff, p,
               snakemake.output[0])
