"""A changed recording description is checked before Snakemake removes anything.

When the description of a recording that was already checked changes (``--config
n_channels=64`` after a good sort), Snakemake reruns ``check_input``, and it deletes the job's
output, ``input.json``, before the job starts. Were the new description a mistake, the run
would fail with ``input.json`` gone, and going back to the right value would schedule every
stage again although the stores on disk were made from exactly those inputs.

So the workflow calls :func:`guard_changed_inputs` while it reads its config: for each recording
whose ``input.json`` was made from another description (its ``requested`` entry), it runs the
input check now. A description that fails stops the run before any job (the error names the
recording, the problem and the fix); ``input.json`` and everything made from it stay as they
were, so once the value is corrected nothing that was valid reruns. The failure is also
written to the recording's ``logs/check_input.refused.log`` and ``results/summary.tsv``; the
first run after the fix removes that log and writes the summary again (a run with nothing to do
writes no summary of its own).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from kilosnake.errors import InputError
from kilosnake.preprocess.check_input import check_input, requested_description
from kilosnake.workflow.summary import filesystem_now, write_summary

logger = logging.getLogger(__name__)


def described(rec: dict, NT: int) -> dict:
    """The description ``check_input`` gets for recording ``rec`` (as its script passes it)."""
    return requested_description(
        rec["dat"],
        rec["probe"],
        rec["n_channels"],
        rec["dtype"],
        rec["sample_rate"],
        rec["uv_per_bit"],
        NT,
    )


def recorded_description(input_json: Path) -> dict | None:
    """The description an existing ``input.json`` was made from (None: none, or too old)."""
    try:
        requested = json.loads(Path(input_json).read_text()).get("requested")
    except (OSError, ValueError, AttributeError):
        return None
    return requested if isinstance(requested, dict) else None


def changed_recordings(recordings: dict, NT: int, results="results") -> dict:
    """``{name: (recorded, current)}`` of the recordings whose ``input.json`` was made from
    another description than the current one."""
    changed = {}
    for name, rec in recordings.items():
        recorded = recorded_description(Path(results) / name / "input.json")
        current = json.loads(json.dumps(described(rec, NT), default=str))
        if recorded is not None and recorded != current:
            changed[name] = (recorded, current)
    return changed


def differences(recorded: dict, current: dict) -> str:
    """e.g. ``"n_channels 32 (now 64)"``."""
    return ", ".join(
        f"{k} {recorded.get(k)} (now {current.get(k)})"
        for k in sorted(set(recorded) | set(current))
        if recorded.get(k) != current.get(k)
    )


#: the log of a description refused while the config was read (the rule's own log is kept)
REFUSED_LOG = "check_input.refused.log"


def write_refusal(log: Path, exc: InputError) -> None:
    """The check's failure, as the rule's log would say it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H:%M:%S")
    log.write_text(
        f"{stamp} ERROR kilosnake: check_input failed: {exc.problem}\n  fix: {exc.fix}\n"
        f"{stamp} INFO kilosnake: checked while reading the config; input.json and the outputs "
        "made from it were left as they were\n"
    )


def refused(recordings: dict, NT: int, results) -> list:
    """``(name, error, what changed)`` of each recording whose changed description fails the
    input check; the refusal is written to its log, and an earlier refusal that no longer
    applies is removed."""
    changed = changed_recordings(recordings, NT, results)
    failures = []
    for name, rec in recordings.items():
        log = Path(results) / name / "logs" / REFUSED_LOG
        error = check_description(rec, NT) if name in changed else None
        if error is None:
            log.unlink(missing_ok=True)
            continue
        write_refusal(log, error)
        failures.append((name, error, differences(*changed[name])))
    return failures


def check_description(rec: dict, NT: int) -> InputError | None:
    """The input check's error for recording ``rec``, or None when it passes."""
    try:
        check_input(
            rec["dat"],
            rec["probe"],
            rec["n_channels"],
            rec["dtype"],
            rec["sample_rate"],
            rec["uv_per_bit"],
            NT,
        )
    except InputError as exc:
        return exc
    return None


def guard_changed_inputs(recordings: dict, NT: int, results="results", config=None) -> None:
    """Check every recording whose description changed since its ``input.json``.

    Parameters
    ----------
    recordings : dict
        The workflow's recordings (:func:`kilosnake.workflow.recordings.recording_sources`).
    NT : int
        Batch length (the recording must hold one batch).
    results : path
        The results folder.
    config : dict, optional
        The config, for the summary written when a check fails (or a refusal is lifted).

    Raises
    ------
    InputError
        For the first recording whose new description fails the check: the recording, the
        problem, the fix, and that the earlier results are kept.
    """
    started = filesystem_now(results)
    before = sorted(Path(results).glob(f"*/logs/{REFUSED_LOG}"))
    failures = refused(recordings, NT, results)
    if failures or before:
        write_summary(recordings, Path(results) / "summary.tsv", results, started, config)
    if not failures:
        return
    name, exc, changed = failures[0]
    raise InputError(
        f"recording {name}: {exc.problem}",
        f"{exc.fix}\n  (the outputs in {Path(results) / name} were made with {changed}: "
        "they are kept as they are, and nothing that was valid reruns once the value is "
        "corrected)",
    )
