# Sorting core: universal waveforms and first templates, template learning, final pass.
# All three read the preprocessed traces through the drift correction
# (kilosnake.drift.DriftCorrectedReader; the identity when drift correction is off).


rule detect:
    input:
        preprocessed=out("preprocessed.zarr"),
        drift=out("drift.zarr"),
    output:
        directory(out("detect.zarr")),
    log:
        log_path("detect"),
    benchmark:
        bench_path("detect")
    params:
        p=stage_params("detect", "learn"),
    conda:
        conda_env()
    script:
        "../../scripts/detect.py"


rule learn:
    input:
        preprocessed=out("preprocessed.zarr"),
        detect=out("detect.zarr"),
        drift=out("drift.zarr"),
    output:
        directory(out("templates.zarr")),
    log:
        log_path("learn"),
    benchmark:
        bench_path("learn")
    params:
        p=stage_params("detect", "learn"),
    conda:
        conda_env()
    script:
        "../../scripts/learn.py"


rule final_pass:
    input:
        preprocessed=out("preprocessed.zarr"),
        templates=out("templates.zarr"),
        drift=out("drift.zarr"),
    output:
        directory(out("spikes.zarr")),
    log:
        log_path("final_pass"),
    benchmark:
        bench_path("final_pass")
    params:
        p=stage_params("learn", "final_pass"),
    conda:
        conda_env()
    script:
        "../../scripts/final_pass.py"
