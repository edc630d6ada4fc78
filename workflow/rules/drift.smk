# Drift estimation (Kilosort 2.5 registration): displacement per batch and depth block, and its
# plot (drawn from the store beside the stages that follow). Later stages apply the estimate
# while reading (kilosnake.drift.DriftCorrectedReader).


rule drift:
    input:
        preprocessed=out("preprocessed.zarr"),
        preprocessed_blocks=preprocessed_blocks,
        whitening=out("whitening.zarr"),
    output:
        directory(out("drift.zarr")),
    log:
        log_path("drift"),
    benchmark:
        bench_path("drift")
    conda:
        conda_env()
    resources:
        gpu=gpu_jobs(),
    params:
        p=rule_params("drift"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule drift_plot:
    input:
        drift=out("drift.zarr"),
    output:
        out("drift.png"),
    log:
        log_path("drift_plot"),
    benchmark:
        bench_path("drift_plot")
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("drift_plot"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
