# Path helpers, config handling and input functions shared by every rule file.
from pathlib import Path

from snakemake.utils import validate

import kilosnake.params as kparams
from kilosnake.summary import write_summary
from kilosnake.workflow import recording_sources


config.update(kparams.coerce_config(config))


validate(config, "../schemas/config.schema.yaml")


RECORDINGS = recording_sources(config)


wildcard_constraints:
    recording=r"[^/]+",


def out(name):
    """Path of a per-recording output, with the {recording} wildcard."""
    return f"results/{{recording}}/{name}"


def log_path(rule_name):
    return f"results/{{recording}}/logs/{rule_name}.log"


def bench_path(rule_name):
    return f"results/{{recording}}/benchmarks/{rule_name}.tsv"


def stage_params(*stages, extra=()):
    """Values of the parameters of ``stages`` (+ ``extra`` names), device and seed.

    Rules list them under ``params:``, so Snakemake reruns a rule when one of them changes.
    """
    names = [n for s in ("run",) + stages for n in kparams.stage_names(s)] + list(extra)
    return kparams.resolve(config, names)


def preprocessed_output():
    """preprocessed.zarr, marked temporary unless keep_intermediates is set."""
    store = directory(out("preprocessed.zarr"))
    return store if config["keep_intermediates"] else temp(store)


def conda_env():
    """The conda environment of the compute rules: GPU when asked for, else CPU."""
    return "../../envs/gpu.yaml" if config.get("device") == "gpu" else "../../envs/cpu.yaml"


def get_raw(wildcards):
    return RECORDINGS[wildcards.recording]["dat"]


def get_probe(wildcards):
    probe = RECORDINGS[wildcards.recording]["probe"]
    return [] if probe is None else probe


def report_scorecard(wildcards):
    """The scorecard of a generated recording (it has ground truth), else nothing."""
    rec = RECORDINGS[wildcards.recording]
    return {"scorecard": out("scorecard.txt").format(recording=wildcards.recording)} if rec.get(
        "gt") else {}


def get_recording_params(wildcards):
    return RECORDINGS[wildcards.recording]


def final_targets():
    """What `snakemake` builds by default: every recording's Phy folder, input check picture and
    QC report, plus the scorecard of each generated recording (those with ground truth)."""
    scored = [name for name, rec in RECORDINGS.items() if rec.get("gt")]
    return expand([out("phy"), out("input_check.png"), out("report.html")],
                  recording=list(RECORDINGS)) + expand(out("scorecard.txt"), recording=scored)
