# Curation: merges, splits, score cutoff and unit labels. Each stage writes label maps and keep
# masks over the spikes of spikes.zarr (feature arrays are never rewritten) and reads only its own
# parameters, so changing a label threshold reruns cutoff and export, not the sort.


rule merge:
    input:
        spikes=out("spikes.zarr"),
        info=stage_info,
    output:
        directory(out("merge.zarr")),
    log:
        log_path("merge"),
    benchmark:
        bench_path("merge")
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("merge"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule split:
    input:
        spikes=out("spikes.zarr"),
        templates=out("templates.zarr"),
        merge=out("merge.zarr"),
        info=stage_info,
    output:
        directory(out("split.zarr")),
    log:
        log_path("split"),
    benchmark:
        bench_path("split")
    conda:
        "../../envs/cpu.yaml"
    threads: 8  # processes fitting clusters (Snakemake lowers it to --cores)
    params:
        p=rule_params("split"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule cutoff:
    input:
        spikes=out("spikes.zarr"),
        split=out("split.zarr"),
        whitening=out("whitening.zarr"),
        info=stage_info,
    output:
        directory(out("cutoff.zarr")),
    log:
        log_path("cutoff"),
    benchmark:
        bench_path("cutoff")
    conda:
        "../../envs/cpu.yaml"
    threads: 8  # processes running the per-cluster score cutoffs (lowered to --cores)
    params:
        p=rule_params("cutoff"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
