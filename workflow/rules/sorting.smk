# Sorting core: universal waveforms and first templates, template learning, final pass.
# All three read the preprocessed traces through the drift correction
# (kilosnake.drift.DriftCorrectedReader; the identity when drift correction is off).


rule detect:
    input:
        preprocessed=out("preprocessed.zarr"),
        preprocessed_blocks=preprocessed_blocks,
        drift=out("drift.zarr"),
    output:
        directory(out("detect.zarr")),
    log:
        log_path("detect"),
    benchmark:
        bench_path("detect")
    conda:
        conda_env()
    resources:
        gpu=gpu_jobs(),
    params:
        p=rule_params("detect"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule learn:
    input:
        preprocessed=out("preprocessed.zarr"),
        preprocessed_blocks=preprocessed_blocks,
        detect=out("detect.zarr"),
        drift=out("drift.zarr"),
    output:
        directory(out("templates.zarr")),
    log:
        log_path("learn"),
    benchmark:
        bench_path("learn")
    conda:
        conda_env()
    resources:
        gpu=gpu_jobs(),
    params:
        p=rule_params("learn"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


if SCATTER_BLOCKS == 1:

    rule final_pass:
        input:
            preprocessed=out("preprocessed.zarr"),
            preprocessed_blocks=preprocessed_blocks,
            templates=out("templates.zarr"),
            drift=out("drift.zarr"),
        output:
            directory(out("spikes.zarr")),
        log:
            log_path("final_pass"),
        benchmark:
            bench_path("final_pass")
        conda:
            conda_env()
        resources:
            gpu=gpu_jobs(),
        params:
            p=rule_params("final_pass"),
            shanks=shank_loop,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )

else:
    # scatter_blocks > 1: one job per time block, then their spikes appended in time order.

    rule final_pass_block:
        input:
            preprocessed=out("preprocessed.zarr"),
            preprocessed_blocks=preprocessed_blocks,
            templates=out("templates.zarr"),
            drift=out("drift.zarr"),
        output:
            block_output("spikes", keep=False),
        log:
            log_path("final_pass_block.{block}-of-{n_blocks}"),
        benchmark:
            bench_path("final_pass_block.{block}-of-{n_blocks}")
        conda:
            conda_env()
        resources:
            gpu=gpu_jobs(),
        params:
            p=rule_params("final_pass_block"),
            shanks=shank_loop,
            block=block_of,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )

    rule gather_spikes:
        input:
            blocks=block_stores("spikes"),
        output:
            directory(out("spikes.zarr")),
        log:
            log_path("gather_spikes"),
        benchmark:
            bench_path("gather_spikes")
        conda:
            conda_env()
        params:
            p=rule_params("gather_spikes"),
            shanks=shank_loop,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )
