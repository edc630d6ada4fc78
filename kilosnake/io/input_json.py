"""input.json: the checked description of a recording that every stage reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kilosnake.io.probe import Probe
from kilosnake.io.recording import RecordingInfo


def read_input_json(path) -> dict:
    """Read ``input.json`` back."""
    return json.loads(Path(path).read_text())


def info_from_input_json(report: dict) -> RecordingInfo:
    """The :class:`RecordingInfo` that ``check_input`` resolved."""
    return RecordingInfo(
        report["dat"],
        report["n_channels_total"],
        report["dtype"],
        report["sample_rate"],
        report["uv_per_bit"],
    )


def probe_from_input_json(report: dict) -> Probe:
    """The probe the sort uses (excluded channels left out)."""
    return Probe.from_dict(report["probe"])


def write_json_atomic(obj, path) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
