"""Rule export_phy: write, validate and publish the Phy folder (shanks joined)."""

from kilosnake.export.shanks import export_recording
from kilosnake.runtime.logs import stage_logging

p, i = snakemake.params.p, snakemake.input
with stage_logging(snakemake.log[0], "export_phy", p, inputs=snakemake.input):
    export_recording(
        i.spikes,
        i.templates,
        i.whitening,
        i.info,
        i.split,
        i.cutoff,
        i.shank_info,
        p,
        snakemake.output[0],
    )
