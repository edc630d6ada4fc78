# What users look at: the input check picture (ready right after check_input, before the sort)
# and the QC report of every recording (one self-contained HTML page). Both are marked for
# `snakemake --report`. The report's traces picture is drawn once the final pass is done, beside
# curation; the report itself waits for curation (its units are the curated ones).


rule input_report:
    input:
        dat=get_raw,
        info=out("input.json"),
    output:
        report(
            whole_out("input_check.png"),
            caption="../report/input_check.rst",
            category="Input check",
            labels={"recording": "{recording}", "figure": "input check"},
        ),
    log:
        log_path("input_report"),
    benchmark:
        bench_path("input_report")
    priority: 50
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("input_report"),
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule traces_plot:
    input:
        dat=get_raw,
        info=out("input.json"),
        preprocessed=out("preprocessed.zarr"),
        preprocessed_blocks=preprocessed_blocks,
        spikes=out("spikes.zarr"),
        templates=out("templates.zarr"),
    output:
        out("traces.png"),
    log:
        log_path("traces_plot"),
    benchmark:
        bench_path("traces_plot")
    conda:
        "../../envs/cpu.yaml"
    params:
        p=rule_params("traces_plot"),
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)


rule report:
    input:
        unpack(report_scorecard),
        # the traces, drift and spikes sections show a recording sorted whole (a multi-shank
        # recording's report has the input check, the units and the run)
        unpack(
            single_shank_inputs(
                traces_plot=out("traces.png"),
                drift=out("drift.zarr"),
                drift_plot=out("drift.png"),
                spikes=out("spikes.zarr"),
            )
        ),
        dat=get_raw,
        info=out("input.json"),
        input_check=out("input_check.png"),
        # the units are read from the stores the export reads, so the report runs beside it
        units_spikes=per_shank("spikes.zarr"),
        units_templates=per_shank("templates.zarr"),
        units_whitening=per_shank("whitening.zarr"),
        units_split=per_shank("split.zarr"),
        units_cutoff=per_shank("cutoff.zarr"),
        units_shank_info=shank_infos,
    output:
        report(
            whole_out("report.html"),
            caption="../report/report.rst",
            category="QC report",
            labels={"recording": "{recording}", "figure": "QC report"},
        ),
    log:
        log_path("report"),
    benchmark:
        bench_path("report")
    conda:
        "../../envs/cpu.yaml"
    params:
        p=report_params(),  # the summary lists the non-default ones
    run:
        run_stage_job(rule, input, output, params, wildcards, threads, resources, log, conda_env)
