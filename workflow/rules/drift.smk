# Drift estimation (Kilosort 2.5 registration): displacement per batch and depth block, and its
# plot. Later stages apply it while reading (kilosnake.drift.DriftCorrectedReader).


rule drift:
    input:
        preprocessed=out("preprocessed.zarr"),
        preprocessed_blocks=preprocessed_blocks,
        whitening=out("whitening.zarr"),
    output:
        store=directory(out("drift.zarr")),
        plot=out("drift.png"),
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
