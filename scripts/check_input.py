"""Rule check_input: check the raw file and the probe, then write input.json."""
from kilosnake.checks import check_input
from kilosnake.logs import stage_logging

rec, p = snakemake.params.recording, snakemake.params.p
with stage_logging(snakemake.log[0], "check_input", p):
    check_input(snakemake.input.dat, rec["probe"], rec["n_channels"], rec["dtype"],
                rec["sample_rate"], rec["uv_per_bit"], p["NT"], snakemake.output[0])
