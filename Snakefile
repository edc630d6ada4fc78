# kilosnake: spike sorting as a Snakemake workflow. Run from this folder:
#   snakemake --cores 8                                     sorts the bundled demo recording
#   snakemake --cores 8 --config dat=rec.bin probe=probe.json n_channels=385
#   snakemake --cores 8 --config recording=/data/run_g0 format=spikeglx stream=imec0.ap
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/recording.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/drift.smk"
include: "workflow/rules/sorting.smk"
include: "workflow/rules/curation.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/groundtruth.smk"


rule all:
    default_target: True
    input:
        final_targets(),


onsuccess:
    print(write_summary(RECORDINGS, since=RUN_STARTED, config=config))
    end_of_run()  # the process then exits at once
    exit_without_teardown()  # the snakemake command: no interpreter teardown at its exit


onerror:
    print(write_summary(RECORDINGS, since=RUN_STARTED, config=config))
    end_of_run()
