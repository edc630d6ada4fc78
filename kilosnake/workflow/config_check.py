"""Config values checked against the parameter table, with errors that say how to fix them.

The workflow reads ``--config`` strings with :func:`coerced_config` (a YAML syntax error, e.g.
``--config "Th=[8,3"``, names its key and the fix) and calls :func:`check_config` before
Snakemake's own schema validation: a value of the wrong type, out of range or not among the
choices, or an unknown key, stops the run before any job starts, with an
:class:`~kilosnake.errors.InputError` that names the key, the bad value, what is allowed and the
fix, e.g.::

    config value NT=10 is not allowed: 10 is less than the minimum of 4096 (allowed: an integer
    >= 4096; samples)
      fix: set NT to an integer >= 4096 in config/config.yaml or with --config NT=<value> (the
      default is 65472)
"""

from __future__ import annotations

import difflib

import yaml

from kilosnake.errors import InputError
from kilosnake.params import PARAMS_BY_NAME, Param, coerce_config, config_schema


def allowed_values(param: Param) -> str:
    """What ``param`` accepts, in words (e.g. "a number from 0 to 1, or null")."""
    kind = {
        "number": "a number",
        "integer": "an integer",
        "string": "a string",
        "boolean": "true or false",
    }
    if param.choices is not None:
        text = "one of " + ", ".join(repr(c) for c in param.choices)
    elif param.type.endswith("_pair"):
        item = param.type[: -len("_pair")]
        text = f"a pair [a, b] of {item}s" + _bounds_text(param)
    else:
        text = kind.get(param.type, param.type) + _bounds_text(param)
    return text + (", or null" if param.nullable else "")


def _bounds_text(param: Param) -> str:
    lo, hi = param.minimum, param.maximum
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" >= {lo:g}"
    if hi is not None:
        return f" <= {hi:g}"
    return ""


def config_error(key: str, value, reason: str) -> InputError:
    """The error for one bad entry of the config."""
    param = PARAMS_BY_NAME.get(key)
    if param is None:
        close = difflib.get_close_matches(key, PARAMS_BY_NAME, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return InputError(
            f"config key {key!r} is unknown{hint}",
            f"remove {key!r} from the config (config/config.yaml or --config) or "
            "correct its name; every key is listed in docs/parameters.md",
        )
    units = f"; {param.units}" if param.units else ""
    allowed = allowed_values(param)
    return InputError(
        f"config value {key}={value!r} is not allowed: {reason} (allowed: {allowed}{units})",
        f"set {key} to {allowed} in config/config.yaml or with --config {key}=<value> (the "
        f"default is {_yaml_text(param.default)})",
    )


def _yaml_text(value) -> str:
    """A value as it is written in config.yaml or after ``--config key=``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_yaml_text(v) for v in value) + "]"
    return str(value)


def config_errors(config: dict) -> list[InputError]:
    """Every bad entry of ``config`` (validated against the table's schema), by key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(config_schema())
    found = {}
    for err in validator.iter_errors(config):
        if err.validator == "additionalProperties":
            for key in sorted(set(config) - set(PARAMS_BY_NAME)):
                found.setdefault(key, config_error(key, config[key], "unknown key"))
            continue
        key = str(err.absolute_path[0]) if err.absolute_path else "?"
        found.setdefault(key, config_error(key, config.get(key), err.message))
    return [found[k] for k in sorted(found)]


def check_config(config: dict) -> None:
    """Raise an :class:`~kilosnake.errors.InputError` naming every bad entry of ``config``.

    Parameters
    ----------
    config : dict
        The workflow's config, after :func:`kilosnake.params.coerce_config`.

    Raises
    ------
    InputError
        One line per bad key (problem), then one ``fix:`` line per key.
    """
    raise_all(config_errors(config) or combination_errors(config))


def combination_errors(config: dict) -> list[InputError]:
    """Keys that do not go together: ``recording`` (a SpikeInterface recording) needs
    ``format`` and replaces ``dat`` and ``recordings``; ``format`` and ``stream`` need it."""
    choices = ", ".join(PARAMS_BY_NAME["format"].choices)
    recording = config.get("recording")
    if not recording:
        given = [k for k in ("format", "stream") if config.get(k)]
        if not given:
            return []
        return [
            InputError(
                f"{' and '.join(given)} given without recording",
                "name the recording too: --config recording=PATH format=FORMAT (or remove "
                f"{' and '.join(given)}; dat= takes a flat binary file)",
            )
        ]
    errors = [
        InputError(
            f"recording={recording!r} and {key}={config[key]!r} both name what to sort",
            f"keep one of them: remove {key} (or recording) from the config",
        )
        for key in ("dat", "recordings")
        if config.get(key)
    ]
    if not config.get("format"):
        errors.append(
            InputError(
                f"recording={recording!r} is given without its format",
                f"add format=FORMAT, one of {choices}",
            )
        )
    return errors


def raise_all(errors) -> None:
    """Raise the one error, or one naming every problem and every fix; nothing when none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputError(
            "\n".join(e.problem for e in errors), "\n  fix: ".join(e.fix for e in errors)
        )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parser error in a few words (e.g. "expected ',' or ']', but got '<stream end>'")."""
    return " ".join(str(getattr(exc, "problem", None) or exc).split())


def coerced_config(config: dict) -> dict:
    """:func:`kilosnake.params.coerce_config`, with a value that is not valid YAML refused by
    an :class:`~kilosnake.errors.InputError` naming its key and the fix."""
    out, errors = dict(config), []
    for key, value in config.items():
        try:
            out.update(coerce_config({key: value}))
        except yaml.YAMLError as exc:
            errors.append(config_error(key, value, f"it is not valid YAML ({yaml_problem(exc)})"))
    raise_all(errors)
    return out
