# Phy export (validated with phylib before it is published) and, for the generated demo, the
# scorecard against its ground truth.


rule export_phy:
    input:
        dat=get_raw,
        info=out("input.json"),
        # one store each for a recording sorted whole, one per shank for a multi-shank one
        spikes=per_shank("spikes.zarr"),
        templates=per_shank("templates.zarr"),
        whitening=per_shank("whitening.zarr"),
        split=per_shank("split.zarr"),
        cutoff=per_shank("cutoff.zarr"),
        shank_info=shank_infos,
    output:
        directory(whole_out("phy")),
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
        whole_out("scorecard.txt"),
    log:
        log_path("scorecard"),
    benchmark:
        bench_path("scorecard")
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/scorecard.py"
