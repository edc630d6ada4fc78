# Phy export (validated with phylib before it is published) and, for the generated demo, the
# scorecard against its ground truth.


def get_ground_truth(wildcards):
    """Ground truth of a generated recording (the scorecard exists only for those)."""
    gt = RECORDINGS[wildcards.recording].get("gt")
    if not gt:
        raise ValueError(f"recording {wildcards.recording!r} has no ground truth to score")
    return gt


rule export_phy:
    input:
        dat=get_raw,
        spikes=out("spikes.zarr"),
        templates=out("templates.zarr"),
        whitening=out("whitening.zarr"),
        info=out("input.json"),
        split=out("split.zarr"),
        cutoff=out("cutoff.zarr"),
    output:
        directory(out("phy")),
    log:
        log_path("export_phy"),
    benchmark:
        bench_path("export_phy")
    params:
        p=stage_params("export"),
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/export_phy.py"


rule scorecard:
    input:
        phy=out("phy"),
        gt=get_ground_truth,
    output:
        out("scorecard.txt"),
    log:
        log_path("scorecard"),
    benchmark:
        bench_path("scorecard")
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/scorecard.py"
