"""Rule report: the sort's outputs → report.html (self-contained QC page)."""

from kilosnake.report.build import write_report
from kilosnake.runtime.logs import stage_logging

i = snakemake.input
with stage_logging(snakemake.log[0], "report", snakemake.params.p, inputs=i):
    write_report(
        snakemake.output[0],
        i.info,
        i.phy,
        preprocessed=getattr(i, "preprocessed", None),
        spikes=getattr(i, "spikes", None),
        drift=getattr(i, "drift", None),
        drift_plot=getattr(i, "drift_plot", None),
        input_check=i.input_check,
        scorecard=getattr(i, "scorecard", None),
        params=snakemake.params.p,
        workers=snakemake.threads,
    )
