"""A row of the parameter table, and which rules read the parameters of each stage."""

from __future__ import annotations

import dataclasses
from typing import Any

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


#: the rules of one recording's sort in workflow order (the order of run tables and benchmarks)
RULE_ORDER = ("check_input", "input_report", "whitening", "preprocess", "drift", "drift_plot",
              "detect", "learn", "final_pass", "traces_plot", "merge", "split", "cutoff",
              "export_phy", "scorecard", "report")  # fmt: skip
#: ... those that sort (the input check, the sorting stages, curation and the export)
SORT_RULES = tuple(
    r
    for r in RULE_ORDER
    if r not in ("input_report", "drift_plot", "traces_plot", "scorecard", "report")
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
#: the gather of each scattered stage, and the rule whose output it makes when unscattered: it
#: reads that rule's parameters (its store's provenance is theirs), so that the output of a
#: stage has the same params: however many jobs made it, and scatter_blocks never reruns it
GATHER_RULES = {"gather_preprocessed": "preprocess", "gather_spikes": "final_pass"}
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
        rules = STAGE_RULES[self.stage] if self.rules is None else self.rules
        gathers = tuple(g for g, r in GATHER_RULES.items() if r in rules and g not in rules)
        return rules + gathers

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
