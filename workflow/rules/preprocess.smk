# Input check, demo recording, whitening matrix and the preprocessed (filtered, whitened) traces.


rule demo_recording:
    output:
        dat="resources/demo/{preset}.bin",
        probe="resources/demo/{preset}.probe.json",
        gt="resources/demo/{preset}_gt.npz",
        meta="resources/demo/{preset}.meta.json",
    log:
        "resources/demo/{preset}.log",
    params:
        seed=config["seed"],
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/demo_recording.py"


rule check_input:
    input:
        dat=get_raw,
        probe=get_probe,
    output:
        out("input.json"),
    log:
        log_path("check_input"),
    benchmark:
        bench_path("check_input")
    params:
        recording=get_recording_params,
        p=stage_params("input", extra=["NT"]),
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/check_input.py"


rule whitening:
    input:
        dat=get_raw,
        info=out("input.json"),
    output:
        directory(out("whitening.zarr")),
    log:
        log_path("whitening"),
    benchmark:
        bench_path("whitening")
    params:
        p=stage_params("preprocess", "whitening"),
    conda:
        conda_env()
    script:
        "../../scripts/whitening.py"


rule preprocess:
    input:
        dat=get_raw,
        info=out("input.json"),
        whitening=out("whitening.zarr"),
    output:
        preprocessed_output(),
    log:
        log_path("preprocess"),
    benchmark:
        bench_path("preprocess")
    params:
        p=stage_params("preprocess"),
    conda:
        conda_env()
    script:
        "../../scripts/preprocess.py"
