# Generated recordings with known spike trains (the demo) and their scorecards: the ground-truth
# tooling of kilosnake.groundtruth.


rule demo_recording:
    output:
        dat="resources/demo/{preset}.bin",
        probe="resources/demo/{preset}.probe.json",
        gt="resources/demo/{preset}_gt.npz",
        meta="resources/demo/{preset}.meta.json",
    log:
        "resources/demo/{preset}.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        seed=config["seed"],
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


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
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
