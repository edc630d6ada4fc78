# Input check, whitening matrix and the preprocessed (filtered, whitened) traces.


rule check_input:
    input:
        dat=get_raw,
        probe=get_probe,
    output:
        whole_out("input.json"),
    log:
        log_path("check_input"),
    benchmark:
        bench_path("check_input")
    conda:
        "../../envs/cpu.yaml"
    params:
        recording=get_recording_params,
        p=rule_params("check_input"),
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule shank_input:
    # one shank of a multi-shank recording: the input description with the probe restricted to
    # the shank; every later stage up to the score cutoff then runs on <recording>/shank<k>
    input:
        "results/{recording}/input.json",
    output:
        "results/{recording,[^/]+}/shank{shank,[0-9]+}/input.json",
    log:
        "results/{recording}/shank{shank}/logs/shank_input.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("shank_input"),
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule whitening:
    input:
        dat=get_raw,
        info=stage_info,
    output:
        directory(out("whitening.zarr")),
    log:
        log_path("whitening"),
    benchmark:
        bench_path("whitening")
    conda:
        conda_env()
    resources:
        gpu=gpu_jobs(),
    params:
        p=rule_params("whitening"),
        shanks=shank_loop,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


if SCATTER_BLOCKS == 1:

    rule preprocess:
        input:
            dat=get_raw,
            info=stage_info,
            whitening=out("whitening.zarr"),
        output:
            preprocessed_output(),
        log:
            log_path("preprocess"),
        benchmark:
            bench_path("preprocess")
        conda:
            conda_env()
        resources:
            gpu=gpu_jobs(),
        params:
            p=rule_params("preprocess"),
            shanks=shank_loop,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )

else:
    # scatter_blocks > 1: one job per time block, then a small store pointing at the blocks
    # (kilosnake.scatter): the traces are not copied.

    rule preprocess_block:
        input:
            dat=get_raw,
            info=stage_info,
            whitening=out("whitening.zarr"),
        output:
            block_output("preprocessed"),
        log:
            log_path("preprocess_block.{block}-of-{n_blocks}"),
        benchmark:
            bench_path("preprocess_block.{block}-of-{n_blocks}")
        conda:
            conda_env()
        resources:
            gpu=gpu_jobs(),
        params:
            p=rule_params("preprocess_block"),
            shanks=shank_loop,
            block=block_of,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )

    rule gather_preprocessed:
        input:
            blocks=block_stores("preprocessed"),
        output:
            preprocessed_output(),
        log:
            log_path("gather_preprocessed"),
        benchmark:
            bench_path("gather_preprocessed")
        conda:
            conda_env()
        params:
            p=rule_params("gather_preprocessed"),
            shanks=shank_loop,
        run:
            run_stage_job(
                rule, input, output, params, wildcards, threads, resources, log, conda_env
            )
