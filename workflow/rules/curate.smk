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
    params:
        p=stage_params("merge"),
        shanks=shank_loop,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/merge.py"


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
    params:
        p=stage_params("split"),
        shanks=shank_loop,
    threads: 8  # processes fitting clusters (Snakemake lowers it to --cores)
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/split.py"


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
    params:
        p=stage_params("cutoff", extra=["Th"]),
        shanks=shank_loop,
    threads: 8  # processes running the per-cluster score cutoffs (lowered to --cores)
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/cutoff.py"
