"""The one entry of every rule: a stage job, described by plain data, run by its stage function.

Each rule of the workflow hands its job to :func:`run_stage` as a :class:`StageJob` (its inputs,
outputs, parameters, log, threads and wildcards, taken from Snakemake by the workflow's
``run_rule``). On one machine the job runs inside the Snakemake process, so a stage costs no
interpreter start, no imports and no new CUDA context; a job that must run in another Python
(its conda environment) is written to a JSON file and run by ``scripts/run_stage.py``, which
calls the same :func:`run_stage`. Either way the stage's log file, its store written to a
temporary path and renamed when complete, and its result are the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from kilosnake.curation.cutoff import run_cutoff
from kilosnake.curation.merge import run_merge
from kilosnake.curation.split import run_split
from kilosnake.drift.detection import DetectionWhilePreprocessing
from kilosnake.drift.estimate import run_drift
from kilosnake.drift.plot import run_drift_plot
from kilosnake.export.shanks import export_recording
from kilosnake.export.view import unit_files_folder
from kilosnake.groundtruth.generate import generate
from kilosnake.groundtruth.score import write_scorecard
from kilosnake.preprocess.check_input import check_input
from kilosnake.preprocess.gather import gather_preprocessed
from kilosnake.preprocess.shank_input import write_shank_input
from kilosnake.preprocess.traces import run_preprocess
from kilosnake.preprocess.whitening import run_whitening
from kilosnake.report.build import write_report
from kilosnake.report.input_check import write_input_check
from kilosnake.report.traces import write_traces_picture
from kilosnake.runtime.logs import stage_logging
from kilosnake.runtime.parallel import one_blas_thread
from kilosnake.sorting.detect import run_detect
from kilosnake.sorting.final_pass import run_final_pass
from kilosnake.sorting.gather import gather_spikes
from kilosnake.sorting.learn import run_learn
from kilosnake.workflow.recordings import convert_recording, write_recording_probe
from kilosnake.workflow.shanks import per_shank

logger = logging.getLogger("kilosnake")


@dataclasses.dataclass
class StageJob:
    """One job of a rule, as plain data (JSON-serialisable).

    ``input`` and ``output`` map the rule's names to a path (or a list of paths);
    ``inputs`` and ``outputs`` are all of them in order, named or not.
    """

    rule: str
    input: dict
    output: dict
    inputs: list
    outputs: list
    params: dict
    log: str | None
    threads: int = 1
    wildcards: dict = dataclasses.field(default_factory=dict)
    #: run-time settings (kilosnake.params.RUN_TIME_SETTINGS): how the job runs, not what it
    #: computes, so no rule lists them under params: and changing them reruns nothing
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def p(self) -> dict:
        """The resolved parameters of the stage (``params: p=`` of its rule)."""
        return self.params.get("p", {})

    def write_json(self, path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def read_json(cls, path) -> StageJob:
        return cls(**json.loads(Path(path).read_text()))


def run_stage(job: StageJob, exit_on_error: bool = False) -> None:
    """Run ``job`` with its stage's log (see :func:`kilosnake.runtime.logs.stage_logging`).

    An expected error (a bad input, with its fix) is logged as its message; it is raised again,
    or, with ``exit_on_error``, ends the process with status 1 (a job in its own interpreter).
    """
    if job.rule not in STAGE_FUNCTIONS:
        raise KeyError(f"no stage function for rule {job.rule!r}")
    params = job.params.get("p") or {k: job.params[k] for k in ("seed",) if k in job.params}
    inputs = () if job.rule == "demo_recording" else job.inputs
    logged = {**params, **job.settings}  # the GPU memory cap is applied as the stage starts
    with stage_logging(job.log, job.rule, logged, exit_on_error=exit_on_error, inputs=inputs):
        with one_blas_thread():  # every stage: see one_blas_thread
            STAGE_FUNCTIONS[job.rule](job)


def main(argv=None) -> int:
    """``run_stage.py JOB.json``: run one stage job in this interpreter."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: run_stage.py JOB.json", file=sys.stderr)
        return 2
    run_stage(StageJob.read_json(argv[0]), exit_on_error=True)
    return 0


# --------------------------------------------------------------------------------------------
# the stages, one function per rule


def shank_calls(job: StageJob, stores: dict, figures: dict | None = None):
    """The calls of a stage job: one, or one per shank of a job that loops over the shanks
    (:func:`kilosnake.workflow.shanks.per_shank`)."""
    return per_shank(job.params.get("shanks"), job.p, dict(job.input), stores, figures)


def single_output(job: StageJob) -> dict:
    return {"out": job.outputs[0]}


def block_of(job: StageJob) -> tuple[int, int]:
    """``(block, n_blocks)`` of a scattered job; ``(0, 1)`` otherwise."""
    return tuple(job.params.get("block", (0, 1)))


def check_input_stage(job: StageJob) -> None:
    # the paths come from the recording, not the inputs: a missing file is left out of those
    rec, p = job.params["recording"], job.p
    check_input(
        rec["dat"],
        rec["probe"],
        rec["n_channels"],
        rec["dtype"],
        rec["sample_rate"],
        rec["uv_per_bit"],
        p["NT"],
        job.outputs[0],
    )


def recording_probe_stage(job: StageJob) -> None:
    write_recording_probe(job.params["source"], job.outputs[0], logger)


def convert_recording_stage(job: StageJob) -> None:
    convert_recording(job.params["source"], job.outputs[0], logger)


def demo_recording_stage(job: StageJob) -> None:
    preset = job.wildcards["preset"]
    generate(preset, Path(job.output["dat"]).parent, name=preset, seed=job.params["seed"])


def shank_input_stage(job: StageJob) -> None:
    write_shank_input(job.inputs[0], int(job.wildcards["shank"]), job.outputs[0])


def whitening_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_whitening(i["info"], pk, o["out"])


def preprocess_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            detections = DetectionWhilePreprocessing(i["whitening"], pk["spkTh_drift"])
            run_preprocess(
                i["info"], i["whitening"], pk, o["out"], block=block_of(job), observer=detections
            )
    if job.rule == "preprocess":  # the whole stage in one job: no block store is used
        remove_unused_blocks(job.outputs[0], [])


def gather_preprocessed_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            gather_preprocessed(list(i["blocks"]), o["out"], pk)
    remove_unused_blocks(job.outputs[0], job.input["blocks"])


def remove_unused_blocks(preprocessed, used) -> None:
    """Remove the block stores beside a new ``preprocessed.zarr`` that it does not point at:
    those of an earlier run with another ``scatter_blocks`` (the traces of hours of data), which
    the store they belonged to, now replaced, was the only reader of."""
    keep = {Path(p).resolve() for p in used}
    for old in sorted((Path(preprocessed).parent / "blocks").glob("preprocessed.*.zarr")):
        if old.resolve() not in keep:
            shutil.rmtree(old)
            logger.info("removed %s: a block store of another scatter_blocks, unused now", old)


def drift_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_drift(i["preprocessed"], i["whitening"], o["out"], pk)


def drift_plot_stage(job: StageJob) -> None:
    with shank_calls(job, {}, {"plot": job.outputs[0]}) as calls:
        for i, o, _ in calls:  # one call, or one per shank (their plots stacked)
            run_drift_plot(i["drift"], o["plot"])


def detect_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:  # drift is absent when the workflow has no drift rule
            run_detect(i["preprocessed"], o["out"], pk, i.get("drift") or None)


def learn_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_learn(i["preprocessed"], i["detect"], o["out"], pk, i.get("drift") or None)


def final_pass_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_final_pass(
                i["preprocessed"],
                i["templates"],
                o["out"],
                pk,
                i.get("drift") or None,
                block=block_of(job),
            )


def gather_spikes_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            gather_spikes(list(i["blocks"]), o["out"], pk)


def merge_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_merge(i["spikes"], i["info"], pk, o["out"])


def split_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_split(
                i["spikes"],
                i["templates"],
                i["merge"],
                i["info"],
                pk,
                o["out"],
                workers=job.threads,
            )


def cutoff_stage(job: StageJob) -> None:
    with shank_calls(job, single_output(job)) as calls:
        for i, o, pk in calls:
            run_cutoff(
                i["spikes"],
                i["split"],
                i["whitening"],
                i["info"],
                pk,
                pk["Th"],
                o["out"],
                workers=job.threads,
            )


def export_phy_stage(job: StageJob) -> None:
    i = job.input
    export_recording(
        i["spikes"],
        i["templates"],
        i["whitening"],
        i["info"],
        i["split"],
        i["cutoff"],
        i["shank_info"],
        job.p,
        job.outputs[0],
    )


def scorecard_stage(job: StageJob) -> None:
    # the scorecard file; the run's closing lines give its headline
    logger.info("%s", write_scorecard(job.input["phy"], job.input["gt"], job.outputs[0]))


def input_report_stage(job: StageJob) -> None:
    write_input_check(job.input["info"], job.outputs[0])


def traces_plot_stage(job: StageJob) -> None:
    i = job.input
    write_traces_picture(i["info"], i["preprocessed"], i["spikes"], i["templates"], job.outputs[0])


def report_stage(job: StageJob) -> None:
    # the units come from the stores, so the report runs beside the export
    i = job.input
    stores = [i[f"units_{k}"] for k in ("spikes", "templates", "whitening")]
    stores += [i["info"], i["units_split"], i["units_cutoff"], i["units_shank_info"]]
    with unit_files_folder(*stores, job.p) as units:
        write_report(
            job.outputs[0],
            i["info"],
            units,
            traces_plot=i.get("traces_plot"),
            spikes=i.get("spikes"),
            drift=i.get("drift"),
            drift_plot=i.get("drift_plot"),
            input_check=i["input_check"],
            scorecard=i.get("scorecard"),
            params=job.p,
        )


#: the stage function of each rule
STAGE_FUNCTIONS: dict[str, Callable[[StageJob], None]] = {
    "demo_recording": demo_recording_stage,
    "recording_probe": recording_probe_stage,
    "convert_recording": convert_recording_stage,
    "check_input": check_input_stage,
    "shank_input": shank_input_stage,
    "whitening": whitening_stage,
    "preprocess": preprocess_stage,
    "preprocess_block": preprocess_stage,
    "gather_preprocessed": gather_preprocessed_stage,
    "drift": drift_stage,
    "drift_plot": drift_plot_stage,
    "detect": detect_stage,
    "learn": learn_stage,
    "final_pass": final_pass_stage,
    "final_pass_block": final_pass_stage,
    "gather_spikes": gather_spikes_stage,
    "merge": merge_stage,
    "split": split_stage,
    "cutoff": cutoff_stage,
    "export_phy": export_phy_stage,
    "scorecard": scorecard_stage,
    "input_report": input_report_stage,
    "traces_plot": traces_plot_stage,
    "report": report_stage,
}
