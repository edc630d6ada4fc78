# Phy export, validated with phylib before it is published.


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
        # update(): Snakemake must not delete the folder before the job; the export moves a
        # folder curated in Phy aside (kilosnake.export.manifest) before publishing the new one
        update(directory(whole_out("phy"))),
    log:
        log_path("export_phy"),
    benchmark:
        bench_path("export_phy")
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("export_phy"),
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
