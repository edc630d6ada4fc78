"""Rule check_input: check the raw file and the probe, then write input.json."""

from kilosnake.preprocess.check_input import check_input
from kilosnake.runtime.logs import stage_logging

rec, p = snakemake.params.recording, snakemake.params.p
with stage_logging(snakemake.log[0], "check_input", p, inputs=snakemake.input):
    # the paths come from the recording, not the inputs: a missing file is left out of those
    check_input(
        rec["dat"],
        rec["probe"],
        rec["n_channels"],
        rec["dtype"],
        rec["sample_rate"],
        rec["uv_per_bit"],
        p["NT"],
        snakemake.output[0],
    )
