"""The one parameter table of kilosnake (the rows: :mod:`kilosnake.params.table`).

Every setting a user can change lives here once, with its default, type, allowed range, the stage
that reads it, its units and a description. The config schema
(``workflow/schemas/config.schema.yaml``), the commented ``config/config.yaml``, the parameter
documentation and the "non-default parameters" log line are all derived from this table.

Names follow Kilosort 2.5 where Kilosort has the parameter (``fshigh``, ``Th``, ``lam``, ...), so
that users coming from Kilosort or pykilosort recognise them. Keys are flat so that
``snakemake --config key=value`` works for every scalar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import yaml

from kilosnake.params.param import (
    GATHER_RULES,
    GPU_RULES,
    RULE_ORDER,
    RUN_TIME_SETTINGS,
    SEEDED_RULES,
    SORT_RULES,
    STAGE_RULES,
    STAGES,
    Param,
    _jsonable,
)
from kilosnake.params.render import (
    GENERATED_FILES,
    config_schema,
    main,
    render_config_yaml,
    render_markdown_table,
    render_schema_yaml,
)
from kilosnake.params.table import PARAMS

__all__ = [
    "GATHER_RULES", "GENERATED_FILES", "GPU_RULES", "PARAMS", "PARAMS_BY_NAME", "RULE_ORDER",
    "RUN_TIME_SETTINGS", "SEEDED_RULES", "SORT_RULES", "STAGES", "STAGE_RULES", "Param",
    "coerce_config", "config_schema", "defaults", "log_non_default", "main", "non_default",
    "render_config_yaml", "render_markdown_table", "render_schema_yaml", "resolve",
    "rule_param_names", "run_time_settings", "stage_names",
]  # fmt: skip

logger = logging.getLogger(__name__)


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
