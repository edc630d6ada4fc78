"""The one parameter table of kilosnake.

Every setting a user can change lives here once, with its default, type, allowed range, the stage
that reads it, its units and a description. The config schema
(``workflow/schemas/config.schema.yaml``), the commented ``config/config.yaml``, the parameter
documentation and the "non-default parameters" log line are all derived from this table.

Names follow Kilosort 2.5 where Kilosort has the parameter (``fshigh``, ``Th``, ``lam``, ...), so
that users coming from Kilosort or pykilosort recognise them. Keys are flat so that
``snakemake --config key=value`` works for every scalar.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: stages, in pipeline order; "input" covers what every stage needs to read the recording
STAGES = (
    "input",
    "run",
    "workflow",
    "whitening",
    "preprocess",
    "drift",
    "detect",
    "learn",
    "final_pass",
    "merge",
    "split",
    "cutoff",
    "export",
)


#: the rules that read the parameters of each stage, unless a parameter names its own
GPU_RULES = ("whitening", "preprocess", "preprocess_block", "drift", "detect", "learn",
             "final_pass", "final_pass_block")  # fmt: skip
STAGE_RULES = {
    "input": ("check_input",),
    "run": (),
    "workflow": (),  # how the jobs run, never what they compute
    "whitening": ("whitening",),
    "preprocess": ("whitening", "preprocess", "preprocess_block"),
    "drift": ("drift",),
    "detect": ("detect",),
    "learn": ("learn",),
    "final_pass": ("final_pass", "final_pass_block"),
    "merge": ("merge",),
    "split": ("split",),
    "cutoff": ("cutoff",),
    "export": ("export_phy",),
}
#: rules that keep the seed in their store's provenance (every stage that writes a store), and
#: the generator of the demo recording, which draws it from the seed
SEEDED_RULES = GPU_RULES + (
    "gather_preprocessed", "gather_spikes", "merge", "split", "cutoff", "demo_recording"
)  # fmt: skip
#: parameters a stage reads at run time that do not change its result: handed to the job, not
#: listed under any rule's params:, so they never trigger a rerun
RUN_TIME_SETTINGS = ("gpu_memory_gb",)


@dataclasses.dataclass(frozen=True)
class Param:
    """One row of the parameter table."""

    name: str
    default: Any
    type: str  # "number" | "integer" | "string" | "boolean" | "number_pair" | "integer_pair"
    stage: str
    units: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    #: the rules whose results depend on this parameter (their ``params:`` list it, so changing
    #: it reruns exactly them and what follows); None: the rules of its stage (STAGE_RULES)
    rules: tuple[str, ...] | None = None

    @property
    def readers(self) -> tuple[str, ...]:
        """The rules that read this parameter (the report reads every one of them too)."""
        return STAGE_RULES[self.stage] if self.rules is None else self.rules

    def json_schema(self) -> dict:
        """The JSON-schema fragment validating this parameter's value."""
        if self.type.endswith("_pair"):
            item = {"type": self.type[: -len("_pair")]}
            item.update(self._bounds())
            schema = {"type": "array", "items": item, "minItems": 2, "maxItems": 2}
        else:
            schema = {"type": self.type}
            schema.update(self._bounds())
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        schema["description"] = f"{self.description} [{self.units}; stage: {self.stage}]"
        schema["default"] = _jsonable(self.default)
        return schema

    def _bounds(self) -> dict:
        bounds = {}
        if self.minimum is not None:
            bounds["minimum"] = self.minimum
        if self.maximum is not None:
            bounds["maximum"] = self.maximum
        return bounds


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


_P = Param
PARAMS: tuple[Param, ...] = (
    # --- the recording (command-line keys) -------------------------------------------------
    _P(
        "dat",
        None,
        "string",
        "input",
        "path",
        "raw binary recording (samples x channels, interleaved); empty = the bundled demo",
        nullable=True,
    ),
    _P(
        "probe",
        None,
        "string",
        "input",
        "path",
        "probe description: probeinterface .json, Kilosort .mat channel map, SpikeGLX .meta, or "
        "a folder with chanMap.npy/xc.npy/yc.npy/kcoords.npy (0-based); empty = the SpikeGLX "
        ".meta beside dat",
        nullable=True,
    ),
    _P(
        "n_channels",
        None,
        "integer",
        "input",
        "channels",
        "total channels in the raw file, sync channel included (NchanTOT); read from a SpikeGLX "
        ".meta beside the file when not given",
        minimum=1,
        nullable=True,
    ),
    _P(
        "dtype",
        "int16",
        "string",
        "input",
        "",
        "sample type of the raw file",
        choices=("int16", "uint16", "int32", "float32"),
    ),
    _P(
        "sample_rate",
        None,
        "number",
        "input",
        "Hz",
        "sampling rate (Kilosort's fs); read from a SpikeGLX .meta when not given, else 30000",
        minimum=1.0,
        nullable=True,
    ),
    _P(
        "uv_per_bit",
        None,
        "number",
        "input",
        "uV",
        "microvolts per raw unit; read from a SpikeGLX .meta when not given",
        minimum=0.0,
        nullable=True,
    ),
    _P(
        "recordings",
        None,
        "string",
        "input",
        "path",
        "tab-separated table of recordings sorted in one run (header: name, dat, probe, "
        "n_channels, sample_rate, dtype; see config/recordings.tsv); replaces dat",
        nullable=True,
        rules=(),
    ),
    _P(
        "demo_preset",
        "demo",
        "string",
        "input",
        "",
        "generator preset sorted when no dat is given",
        choices=(
            "demo",
            "small",
            "np",
            "drift",
            "drift_randomwalk",
            "drift_nonrigid",
            "drift_static",
            "shanks4",
        ),
        rules=(),
    ),
    # --- how it runs ---------------------------------------------------------------------
    _P(
        "device",
        "auto",
        "string",
        "run",
        "",
        "array backend: cpu (NumPy), gpu (CuPy, error if none), auto (GPU when CuPy sees one)",
        choices=("auto", "cpu", "gpu"),
        rules=GPU_RULES,
    ),
    _P(
        "seed",
        42,
        "integer",
        "run",
        "",
        "seed of every random choice; same seed, same output",
        minimum=0,
        rules=SEEDED_RULES,
    ),
    _P(
        "gpu_memory_gb",
        None,
        "number",
        "run",
        "GB",
        "cap on the GPU memory a stage's array pool may hold; block sizes are chosen to fit and "
        "halved (and logged) on an out-of-memory error. null: the GPU's free memory",
        minimum=0.25,
        nullable=True,
    ),
    _P(
        "keep_intermediates",
        True,
        "boolean",
        "workflow",
        "",
        "keep preprocessed.zarr after the Phy folder is written (about 60 GB per hour of "
        "384-channel data); false: Snakemake deletes it at the end of the run, and a later "
        "rerun of a sorting stage preprocesses again",
    ),
    _P(
        "scatter_blocks",
        1,
        "integer",
        "workflow",
        "jobs",
        "jobs the preprocess and final-pass stages are each split into, over contiguous time "
        "blocks (batch ranges), so that several GPUs or cluster nodes share them; the result "
        "does not change. 1 = one job per stage",
        minimum=1,
    ),
    _P(
        "scatter_shanks",
        False,
        "boolean",
        "workflow",
        "",
        "multi-shank probes (each shank is sorted on its own): true = one job per shank and "
        "stage, side by side; false = one job per stage that sorts the shanks one after the "
        "other. The result does not change",
    ),
    _P(
        "in_process",
        True,
        "boolean",
        "workflow",
        "",
        "run each stage inside the Snakemake process: no interpreter start, imports or CUDA "
        "context per job. false: each job in a Python process of its own (as with --use-conda, "
        "a cluster job, or several GPUs on one machine, which always do). The result does not "
        "change",
    ),
    # --- batches -------------------------------------------------------------------------
    _P(
        "NT",
        65472,
        "integer",
        "preprocess",
        "samples",
        "batch length (Kilosort 2.5: 64*1024-64)",
        minimum=4096,
        rules=("check_input", "whitening", "preprocess", "preprocess_block"),
    ),
    _P(
        "ntbuff",
        64,
        "integer",
        "preprocess",
        "samples",
        "margin read on each side of a batch; absorbs filter edges",
        minimum=0,
    ),
    # --- whitening -----------------------------------------------------------------------
    _P(
        "whiteningRange",
        32,
        "integer",
        "whitening",
        "channels",
        "nearest channels in each local ZCA whitening neighbourhood",
        minimum=1,
    ),
    _P(
        "nSkipCov",
        25,
        "integer",
        "whitening",
        "batches",
        "batch stride when estimating the channel covariance (shortened so that at least "
        "10 batches are used)",
        minimum=1,
    ),
    # --- preprocessing -------------------------------------------------------------------
    _P(
        "fshigh",
        300.0,
        "number",
        "preprocess",
        "Hz",
        "high-pass corner of the 3rd-order Butterworth filter",
        minimum=1.0,
    ),
    _P(
        "fslow",
        None,
        "number",
        "preprocess",
        "Hz",
        "optional low-pass corner (band-pass); empty = high-pass only",
        minimum=1.0,
        nullable=True,
    ),
    _P(
        "CAR",
        True,
        "boolean",
        "preprocess",
        "",
        "subtract the median across channels at every sample (common median reference)",
    ),
    _P(
        "scaleproc",
        200.0,
        "number",
        "preprocess",
        "",
        "int16 scaling of the whitened data (whitened SD 1 -> 200 units)",
        minimum=1.0,
        rules=("preprocess", "preprocess_block"),
    ),
    # --- drift -----------------------------------------------------------------------------
    _P(
        "nblocks",
        5,
        "integer",
        "drift",
        "blocks",
        "registration blocks: 0 = off, 1 = rigid, >1 = non-rigid",
        minimum=0,
    ),
    _P(
        "sig_datashift",
        20.0,
        "number",
        "drift",
        "um",
        "length scale of the kriging interpolation used to shift the data",
        minimum=1.0,
    ),
    _P(
        "spkTh_drift",
        8.0,
        "number",
        "drift",
        "whitened SD",
        "threshold of the negative peaks detected for drift estimation",
        minimum=1.0,
    ),
    # --- detection and universal waveforms -------------------------------------------------
    _P(
        "spkTh",
        -6.0,
        "number",
        "detect",
        "whitened SD",
        "single-channel threshold for the snippets that give the universal waveforms",
        maximum=0.0,
    ),
    _P(
        "nskip",
        25,
        "integer",
        "detect",
        "batches",
        "batch stride when collecting snippets for the universal waveforms",
        minimum=1,
    ),
    _P(
        "nt0",
        61,
        "integer",
        "detect",
        "samples",
        "template length (odd)",
        minimum=21,
        rules=("detect", "learn", "final_pass", "final_pass_block"),
    ),
    _P(
        "nt0min",
        20,
        "integer",
        "detect",
        "samples",
        "index of the negative peak inside the template window",
        minimum=1,
        rules=("detect", "learn", "final_pass", "final_pass_block"),
    ),
    _P(
        "loc_range",
        (5, 4),
        "integer_pair",
        "detect",
        "samples, channels",
        "half-widths (time, channel index) of the isolated-peak running minimum",
        minimum=0,
    ),
    _P(
        "long_range",
        (30, 6),
        "integer_pair",
        "detect",
        "samples, channels",
        "half-widths (time, channel index) within which a peak must be the only one",
        minimum=0,
    ),
    _P(
        "sigmaMask",
        30.0,
        "number",
        "detect",
        "um",
        "spatial scale of the Gaussian channel mask around a template's peak channel",
        minimum=1.0,
    ),
    _P(
        "nup",
        10,
        "integer",
        "detect",
        "phases",
        "sub-sample phases used to align template peaks",
        minimum=1,
    ),
    _P(
        "sig",
        1.0,
        "number",
        "detect",
        "samples",
        "length scale of the sub-sample alignment kriging kernel",
        minimum=0.01,
    ),
    # --- template learning -----------------------------------------------------------------
    _P(
        "Th",
        (10.0, 4.0),
        "number_pair",
        "learn",
        "whitened SD",
        "score thresholds: template learning (Th[0]) and final pass (Th[1]); also the cutoff range",
        minimum=0.0,
        rules=("detect", "learn", "final_pass", "final_pass_block", "cutoff"),
    ),
    _P(
        "lam",
        10.0,
        "number",
        "learn",
        "",
        "weight of the amplitude prior in matching pursuit",
        minimum=0.0,
        rules=("learn", "final_pass", "final_pass_block"),
    ),
    _P(
        "minFR",
        0.02,
        "number",
        "learn",
        "Hz",
        "templates firing below this rate are dropped during learning",
        minimum=0.0,
    ),
    _P(
        "momentum",
        (20.0, 400.0),
        "number_pair",
        "learn",
        "spikes",
        "effective number of spikes averaged into a template, annealed from first to second",
        minimum=1.0,
    ),
    _P(
        "nfilt_factor",
        4,
        "integer",
        "learn",
        "templates per channel",
        "maximum number of templates = nfilt_factor x channels",
        minimum=1,
    ),
    _P(
        "nPCs",
        3,
        "integer",
        "final_pass",
        "",
        "PCs per channel in pc_features",
        minimum=1,
        maximum=6,
    ),
    # --- merges ------------------------------------------------------------------------------
    _P(
        "merge_sim_min",
        0.5,
        "number",
        "merge",
        "",
        "minimum template similarity for a merge candidate",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "merge_Q_max",
        0.2,
        "number",
        "merge",
        "",
        "merge when the cross-correlogram's refractory ratio Q is below this ...",
        minimum=0.0,
    ),
    _P(
        "merge_R_max",
        0.05,
        "number",
        "merge",
        "",
        "... and its significance R is below this",
        minimum=0.0,
        maximum=1.0,
    ),
    # --- splits ------------------------------------------------------------------------------
    _P(
        "AUCsplit",
        0.9,
        "number",
        "split",
        "",
        "minimum confidence of both halves of a bimodal split",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "split_min_spikes",
        300,
        "integer",
        "split",
        "spikes",
        "units and split halves smaller than this are not split",
        minimum=2,
    ),
    _P(
        "split_min_fraction",
        0.05,
        "number",
        "split",
        "",
        "the smaller half must hold at least this fraction of the spikes",
        minimum=0.0,
        maximum=0.5,
    ),
    _P(
        "split_veto_Q",
        0.25,
        "number",
        "split",
        "",
        "no split when the halves' cross-correlogram is refractory: Q below this ...",
        minimum=0.0,
    ),
    _P(
        "split_veto_R",
        0.05,
        "number",
        "split",
        "",
        "... and R below this",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "split_veto_corr",
        0.9,
        "number",
        "split",
        "",
        "no split when the halves' mean waveforms correlate above this ...",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "split_veto_ampdiff",
        0.2,
        "number",
        "split",
        "",
        "... and their relative amplitude difference is below this",
        minimum=0.0,
    ),
    # --- cutoff and labels ------------------------------------------------------------------
    _P(
        "cutoff_fcont",
        0.1,
        "number",
        "cutoff",
        "",
        "contamination above which a unit stops being 'good' while its score threshold drops",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "cutoff_R_max",
        0.05,
        "number",
        "cutoff",
        "",
        "refractory significance above which a unit stops being 'good'",
        minimum=0.0,
        maximum=1.0,
    ),
    _P(
        "good_max_spread_um",
        100.0,
        "number",
        "cutoff",
        "um",
        "a 'good' unit's template energy must lie within this mean distance of its centre",
        minimum=0.0,
    ),
    # --- export --------------------------------------------------------------------------------
    _P(
        "templateScaling",
        20.0,
        "number",
        "export",
        "",
        "written to params.py as template_scaling (Phy's template display scale)",
        minimum=0.0,
    ),
    _P("gain", 1.0, "number", "export", "", "multiplies cluster_Amplitude", minimum=0.0),
    _P(
        "metrics_refractory_ms",
        1.5,
        "number",
        "export",
        "ms",
        "refractory period of the rp_contamination metric (cluster_metrics.tsv)",
        minimum=0.0,
    ),
    _P(
        "metrics_censored_ms",
        0.0,
        "number",
        "export",
        "ms",
        "censored period of rp_contamination: closer spike pairs are not counted",
        minimum=0.0,
    ),
)

PARAMS_BY_NAME = {p.name: p for p in PARAMS}


def defaults() -> dict:
    """Every parameter at its default value (pairs as lists, as YAML gives them)."""
    return {p.name: _jsonable(p.default) for p in PARAMS}


def rule_param_names(rule: str) -> list[str]:
    """Names of the parameters ``rule`` reads (its ``params:``), in table order."""
    return [p.name for p in PARAMS if rule in p.readers]


def run_time_settings(config: dict) -> dict:
    """The run-time settings of a job (:data:`RUN_TIME_SETTINGS`) from a config."""
    return resolve(config, RUN_TIME_SETTINGS)


def stage_names(stage: str) -> list[str]:
    """Names of the parameters a stage reads (the run-wide ones excluded)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return [p.name for p in PARAMS if p.stage == stage]


def coerce_config(config: dict) -> dict:
    """Parse string values given with ``--config key=value`` into the table's types.

    Snakemake hands ``--config Th=[8,3]`` over as a list of strings and ``fslow=null`` as the
    string ``'null'``; this re-reads such strings as YAML so that the schema sees real values.
    Unknown keys are left alone (the schema rejects them with a clear message).
    """
    out = dict(config)
    for name, value in config.items():
        param = PARAMS_BY_NAME.get(name)
        if param is None or param.type == "string":
            if param is not None and value in ("null", "None", ""):
                out[name] = None
            continue
        if isinstance(value, str):
            out[name] = yaml.safe_load(value) if value not in ("None", "") else None
        elif isinstance(value, list):
            out[name] = [yaml.safe_load(v) if isinstance(v, str) else v for v in value]
    return out


def resolve(config: dict, names: Iterable[str] | None = None) -> dict:
    """Parameter values from a config, defaults filled in (optionally only ``names``)."""
    values = defaults()
    values.update({k: v for k, v in coerce_config(config).items() if k in PARAMS_BY_NAME})
    if names is None:
        return values
    return {name: values[name] for name in names}


def non_default(values: dict) -> dict:
    """The entries of ``values`` that differ from the table's defaults."""
    return {
        name: value
        for name, value in values.items()
        if name in PARAMS_BY_NAME and value != _jsonable(PARAMS_BY_NAME[name].default)
    }


def log_non_default(values: dict, log: logging.Logger = logger) -> None:
    """The first log line of every stage: which parameters differ from the defaults."""
    changed = non_default(values)
    if changed:
        text = ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items()))
        log.info("non-default parameters: %s", text)
    else:
        log.info("non-default parameters: none")


def config_schema() -> dict:
    """The JSON schema of ``config/config.yaml``, generated from the table."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kilosnake configuration",
        "description": "Generated from kilosnake/params.py; edit the table, not this file.",
        "type": "object",
        "additionalProperties": False,
        "properties": {p.name: p.json_schema() for p in PARAMS},
    }


def render_schema_yaml() -> str:
    """The text of ``workflow/schemas/config.schema.yaml``."""
    header = "# Generated by `python -m kilosnake.params`; edit kilosnake/params.py instead.\n"
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=100)


def render_config_yaml() -> str:
    """The text of ``config/config.yaml``: every key, its default and a comment."""
    lines = [
        "# kilosnake configuration. Generated from kilosnake/params.py by",
        "# `python -m kilosnake.params`; every key can also be set with",
        "# `snakemake --config key=value`. Units and stage in brackets.",
    ]
    stage = None
    for p in PARAMS:
        if p.stage != stage:
            stage = p.stage
            lines += ["", f"# --- {stage} ---"]
        lines.append(f"# {p.description} [{p.units or 'no unit'}]")
        lines.append(f"{p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


def _yaml_value(value) -> str:
    """A value as one line of YAML (lists in flow style)."""
    text = yaml.safe_dump(_jsonable(value), default_flow_style=True).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def render_markdown_table() -> str:
    """The parameter documentation (``docs/parameters.md``)."""
    rows = [
        "| name | default | stage | units | range | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in PARAMS:
        bounds = p.choices or (p.minimum, p.maximum)
        rows.append(
            f"| `{p.name}` | `{_jsonable(p.default)!r}` | {p.stage} | {p.units} | "
            f"{bounds} | {p.description} |"
        )
    return "# Parameters\n\nGenerated from `kilosnake/params.py`.\n\n" + "\n".join(rows) + "\n"


GENERATED_FILES = {
    "workflow/schemas/config.schema.yaml": render_schema_yaml,
    "config/config.yaml": render_config_yaml,
    "docs/parameters.md": render_markdown_table,
}


def main() -> None:
    """Regenerate the schema, the default config and the parameter docs in the current folder."""
    from pathlib import Path

    for rel, render in GENERATED_FILES.items():
        path = Path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
