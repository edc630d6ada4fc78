# Path helpers, config handling and input functions shared by every rule file.
import os
import sys
import time
from pathlib import Path

from snakemake.utils import validate

import kilosnake.params as kparams
from kilosnake.workflow.config_check import check_config, coerced_config
from kilosnake.workflow.input_guard import guard_changed_inputs
from kilosnake.workflow.shanks import shank_seed, split_name, sub_recording
from kilosnake.workflow.summary import filesystem_now, write_summary
from kilosnake.workflow.ending import end_of_run, exit_without_teardown
from kilosnake.runtime.gpus import gpu_count
from kilosnake.workflow.recordings import recording_sources, shank_counts

#: when this run started: the summary counts a stage log written since then as this run's
RUN_STARTED = filesystem_now("results")

config.update(coerced_config(config))  # a YAML syntax error names its key and the fix
check_config(config)  # names the key, the bad value, what is allowed and the fix


validate(config, "../schemas/config.schema.yaml")


RECORDINGS = recording_sources(config)
# a changed recording description is checked now, before Snakemake removes input.json
guard_changed_inputs(RECORDINGS, kparams.resolve(config, ["NT"])["NT"], config=config)
#: shanks of each recording's probe; a multi-shank recording is sorted shank by shank, as the
#: sub-recordings <recording>/shank<k> (kilosnake.shanks), and joined at export
SHANKS = shank_counts(RECORDINGS)


wildcard_constraints:
    recording=r"[^/]+(/shank[0-9]+)?",
    block=r"[0-9]+",
    n_blocks=r"[0-9]+",


#: jobs the preprocess and final-pass stages are split into (time blocks); 1 = unscattered
SCATTER_BLOCKS = int(config["scatter_blocks"])
#: multi-shank recordings: one job per shank and stage (true), or one per stage (false)
SCATTER_SHANKS = bool(config["scatter_shanks"])


def out(name):
    """Path of a per-recording output, with the {recording} wildcard (a whole recording, or one
    shank of it: <recording>/shank<k>)."""
    return f"results/{{recording}}/{name}"


def whole_out(name):
    """Path of an output made for a whole recording only (never for one shank)."""
    return f"results/{{recording,[^/]+}}/{name}"


def source(wildcards):
    """The recording (from the recordings table or config) a job works on, shank or whole."""
    return RECORDINGS[split_name(wildcards.recording)[0]]


def shank_loop(wildcards):
    """Shanks a stage job loops over (a multi-shank recording without scatter_shanks), else
    None: the job computes what its wildcards name (a whole recording, or one shank)."""
    n = SHANKS.get(wildcards.recording, 1)
    return n if n > 1 and not SCATTER_SHANKS else None


def stage_info(wildcards):
    """The input.json a stage job reads: its recording's (or shank's), or each shank's for a
    job that loops over the shanks."""
    if shank_loop(wildcards):
        return [
            out("input.json").format(recording=sub_recording(wildcards.recording, k))
            for k in range(SHANKS[wildcards.recording])
        ]
    return out("input.json").format(recording=wildcards.recording)


def shank_infos(wildcards):
    """The input.json of each shank of a multi-shank recording (of the recording otherwise)."""
    n = SHANKS[wildcards.recording]
    names = (
        [wildcards.recording]
        if n == 1
        else [sub_recording(wildcards.recording, k) for k in range(n)]
    )
    return [out("input.json").format(recording=name) for name in names]


def per_shank(name):
    """Input function: ``name`` of the whole recording (a shank set when its job looped over
    the shanks), or of each of its shanks in order (scatter_shanks)."""

    def paths(wildcards):
        n = SHANKS[wildcards.recording]
        if n == 1 or not SCATTER_SHANKS:
            return [out(name).format(recording=wildcards.recording)]
        return [out(name).format(recording=sub_recording(wildcards.recording, k)) for k in range(n)]

    return paths


def single_shank_inputs(**names):
    """Input function (for ``unpack``): the given outputs of a recording sorted whole; nothing
    for a multi-shank one (each shank has its own)."""

    def paths(wildcards):
        if SHANKS[wildcards.recording] > 1:
            return {}
        return {
            key: (
                value(wildcards) if callable(value) else value.format(recording=wildcards.recording)
            )
            for key, value in names.items()
        }

    return paths


def log_path(rule_name):
    return f"results/{{recording}}/logs/{rule_name}.log"


def bench_path(rule_name):
    return f"results/{{recording}}/benchmarks/{rule_name}.tsv"


def rule_params(rule_name):
    """Input function for ``params: p=``: the values of the parameters ``rule_name`` reads (the
    parameter table says which), the seed made per shank for a shank's job. Snakemake reruns a
    rule when one of them changes, and only then; the recording's own description (dat, probe,
    ...) reaches check_input through ``params: recording``."""
    names = [
        n for n in kparams.rule_param_names(rule_name) if kparams.PARAMS_BY_NAME[n].stage != "input"
    ]
    values = kparams.resolve(config, names)

    def for_job(wildcards):
        shank = split_name(wildcards.get("recording", ""))[1]
        if shank is None or "seed" not in values:
            return values
        return {**values, "seed": shank_seed(values["seed"], shank)}

    return for_job


def report_params():
    """The report lists every non-default parameter: it reads all of them but the workflow's
    and the run-time settings, which change how jobs run, never what they compute."""
    return kparams.resolve(
        config, [p.name for p in kparams.PARAMS if p.readers or p.stage == "input"]
    )


def preprocessed_output():
    """preprocessed.zarr, marked temporary unless keep_intermediates is set."""
    store = directory(out("preprocessed.zarr"))
    return store if config["keep_intermediates"] else temp(store)


#: a block store: block ``{block}`` of a stage split into ``{n_blocks}`` time blocks. The name
#: says the split, so the stores of another scatter_blocks are other files: changing the
#: setting leaves finished stores (and the stage output made from them) as they are
BLOCK_STORE = "blocks/{name}.{{block}}-of-{{n_blocks}}.zarr"


def block_output(name, keep=True):
    """One block store of a scattered stage (``{block}``, ``{n_blocks}`` wildcards): kept when
    ``keep`` and keep_intermediates are set, else removed once its readers are done."""
    store = directory(out(BLOCK_STORE.format(name=name)))
    return store if keep and config["keep_intermediates"] else temp(store)


def block_stores(name):
    """Input function: every block store of a scattered stage, in block order."""

    def paths(wildcards):
        return expand(
            out(BLOCK_STORE.format(name=name)),
            recording=wildcards.recording,
            block=range(SCATTER_BLOCKS),
            n_blocks=SCATTER_BLOCKS,
        )

    return paths


def preprocessed_blocks(wildcards):
    """The block stores a scattered preprocessed.zarr points at, when they are temporary
    (keep_intermediates false): rules reading the traces list them, so they are kept until the
    last reader has finished. Kept stores are not listed: a stage reading the traces then
    does not depend on how many jobs made them, and changing scatter_blocks reruns nothing."""
    if SCATTER_BLOCKS == 1 or config["keep_intermediates"]:
        return []
    return block_stores("preprocessed")(wildcards)


def block_of(wildcards):
    """``(block, n_blocks)`` of a block job, as the library functions take it."""
    return (int(wildcards.block), int(wildcards.n_blocks))


#: stages run inside this Snakemake process unless asked otherwise (see run_stage_job)
IN_PROCESS = bool(config["in_process"])
#: the stages drawn beside the sort's main line: unless side_pictures_in_process is set they run
#: in a side worker, a Python of their own started by the first of them and reused by the
#: others (kilosnake.workflow.side_worker), not holding the interpreter lock of the stages
#: running beside them (whitening, detect, the Phy export)
SIDE_STAGES = {"input_report", "drift_plot", "traces_plot", "report"}
SIDE_PICTURES_IN_PROCESS = bool(config["side_pictures_in_process"])
#: a machine with several GPUs and none assigned: each GPU job claims one in its own process
SEVERAL_LOCAL_GPUS = (
    config.get("device") != "cpu" and "CUDA_VISIBLE_DEVICES" not in os.environ and gpu_count() > 1
)

#: the GPU stages run in this process: CUDA can start beside the input check
GPU_IN_PROCESS = IN_PROCESS and config.get("device") != "cpu" and not SEVERAL_LOCAL_GPUS


def stage_job(rule_name, input, output, params, wildcards, threads, log):
    """The job of a rule as plain data, for kilosnake.workflow.stages.run_stage."""
    # imported when a job runs, not when the workflow is read: it brings every stage's code
    from kilosnake.workflow.stages import StageJob

    def plain(value):
        return value if isinstance(value, (str, int, float, type(None))) else list(value)

    return StageJob(
        rule_name,  # the rule
        input={k: plain(v) for k, v in input.items()},
        output={k: plain(v) for k, v in output.items()},
        inputs=[str(v) for v in input],
        outputs=[str(v) for v in output],
        params={k: v for k, v in params.items()},
        settings=kparams.run_time_settings(config),
        log=str(log[0]) if log else None,
        threads=int(threads),
        wildcards=dict(wildcards.items()),
    )


def run_stage_job(rule_name, input, output, params, wildcards, threads, resources, log, conda_env):
    """Run a rule's stage: here, inside the Snakemake process; in the side worker (the
    pictures and the report); or in a Python of its own when the job has a conda environment
    (--use-conda), uses a GPU on a machine with several, or in_process is false. Same stage
    function, same log file, same result."""
    job = stage_job(rule_name, input, output, params, wildcards, threads, log)
    gpu_job = resources.get("gpu", 0) > 0
    own = conda_env or not IN_PROCESS or (SEVERAL_LOCAL_GPUS and gpu_job)
    side = rule_name in SIDE_STAGES and not SIDE_PICTURES_IN_PROCESS
    if not (own or side):
        from kilosnake.workflow.stages import run_stage

        if rule_name == "check_input" and GPU_IN_PROCESS:
            from kilosnake.runtime.backend import start_gpu_ahead

            start_gpu_ahead()  # CuPy and the CUDA context, ready for the whitening
        if GPU_IN_PROCESS and gpu_job:
            from kilosnake.runtime.threads import on_kept_thread

            on_kept_thread(run_stage, job).result()  # CuPy's per-thread handles are kept
        else:
            run_stage(job)
        return
    job_file = Path(job.log).with_name(f"{rule_name}.job.json")
    job.write_json(job_file)
    if own:
        python = "python" if conda_env else sys.executable
        script = Path(workflow.basedir) / "scripts" / "run_stage.py"
        shell(f"{python} {script} {job_file}", conda_env=conda_env, threads=threads)
    else:
        from kilosnake.workflow.side_worker import run_in_side_worker

        status = run_in_side_worker(job_file)
        if status != 0:
            raise RuntimeError(f"{rule_name} failed (exit status {status}): see {job.log}")
    job_file.unlink()


def gpu_jobs():
    """``resources: gpu=`` of a GPU stage: 1 unless the run is on the CPU, so that
    `--resources gpu=N` runs at most N of them at once (one per GPU; see kilosnake.gpus)."""
    return 0 if config.get("device") == "cpu" else 1


def conda_env():
    """The conda environment of the compute rules: GPU when asked for, else CPU."""
    return "../../envs/gpu.yaml" if config.get("device") == "gpu" else "../../envs/cpu.yaml"


def existing_or_made(rec, path):
    """``path`` as a rule input, or nothing when it is missing and no rule makes it.

    A missing raw or probe file given by the user must not stop the DAG of the other
    recordings: the file is then left out of the inputs, and check_input (which reads the
    paths from its params) fails for that recording alone, saying what is missing and how to
    fix it; the rules after it never run.
    """
    if path is None:
        return []
    made = path in rec.get("made", ())  # by recording_probe or convert_recording
    return path if rec.get("demo") or made or Path(path).exists() else []


def get_raw(wildcards):
    rec = source(wildcards)
    return existing_or_made(rec, rec["dat"])


def get_probe(wildcards):
    rec = source(wildcards)
    return existing_or_made(rec, rec["probe"])


def report_scorecard(wildcards):
    """The scorecard of a generated recording (it has ground truth), else nothing."""
    rec = RECORDINGS[wildcards.recording]
    return (
        {"scorecard": out("scorecard.txt").format(recording=wildcards.recording)}
        if rec.get("gt")
        else {}
    )


def recording_source(wildcards):
    """What the rules reopening a SpikeInterface recording read: its path, format and stream."""
    return RECORDINGS[wildcards.recording]["source"]


def get_recording_params(wildcards):
    return RECORDINGS[wildcards.recording]


def final_targets():
    """What `snakemake` builds by default: every recording's Phy folder, input check picture and
    QC report, plus the scorecard of each generated recording (those with ground truth)."""
    scored = [name for name, rec in RECORDINGS.items() if rec.get("gt")]
    return expand(
        [out("phy"), out("input_check.png"), out("report.html")], recording=list(RECORDINGS)
    ) + expand(out("scorecard.txt"), recording=scored)
