# kilosnake: spike sorting as a Snakemake workflow. Run from this folder:
#   snakemake --cores 8                                     sorts the bundled demo recording
#   snakemake --cores 8 --config dat=rec.bin probe=probe.json n_channels=385
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/drift.smk"
include: "workflow/rules/sort.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets(),
    default_target: True


onsuccess:
    print(write_summary(RECORDINGS))


onerror:
    print(write_summary(RECORDINGS))
