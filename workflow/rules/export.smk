# Phy export (validated with phylib before it is published) and, for the generated demo, the
# scorecard against its ground truth.


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
        gt=lookup(dpath="{recording}/gt", within=RECORDINGS),
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
