# A recording in a format SpikeInterface reads (--config recording=... format=... stream=...):
# its probe, and, when no flat binary lies behind it, its traces written once as int16.


rule recording_probe:
    output:
        whole_out("probe.json"),
    log:
        log_path("recording_probe"),
    conda:
        "../../envs/cpu.yaml"
    params:
        source=recording_source,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule convert_recording:
    output:
        whole_out("recording.dat"),
    log:
        log_path("convert_recording"),
    benchmark:
        bench_path("convert_recording")
    conda:
        "../../envs/cpu.yaml"
    params:
        source=recording_source,
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
