"""A parameter reruns exactly the rules that read it: after a demo sort, a dry run with each
parameter of the table changed plans its readers (by the table) and what follows from them, for
no other reason; a workflow or run-time setting plans nothing."""

import re

import pytest
from workflow_runs import CONFIG, snakemake

import kilosnake.params as kparams

pytestmark = pytest.mark.slow

#: rules of the demo's workflow (a single-shank recording sorted unscattered)
DEMO_RULES = {"demo_recording", *kparams.RULE_ORDER}
#: the recording's own description and the set of recordings: they say what is sorted
NOT_A_SETTING = {"dat", "probe", "n_channels", "dtype", "sample_rate", "uv_per_bit",
                 "recordings", "demo_preset"}  # fmt: skip
#: changes the jobs themselves (one stage becomes several), so the scattered stage runs again
CHANGES_THE_JOBS = {"scatter_blocks"}


def changed_value(p: kparams.Param):
    """A valid value of ``p`` other than the demo's, as ``--config`` text."""
    if p.name == "device":  # the demo runs with device=cpu
        return "auto"
    if p.choices:
        return next(c for c in p.choices if c != p.default)
    if p.type == "boolean":
        return str(not p.default).lower()
    if p.type.endswith("_pair"):
        lo, hi = p.default
        return (
            f"[{lo + 1},{hi + 1}]" if p.type.startswith("integer") else f"[{lo * 1.1},{hi * 1.1}]"
        )
    if p.default is None:
        return str(max(p.minimum or 0, 1) * 2)
    if p.type == "integer":
        step = 2 if p.name == "nt0" else 1  # the template length stays odd
        up = p.default + step
        return str(up if p.maximum is None or up <= p.maximum else p.default - step)
    up = p.default * 1.25 if p.default else 0.5
    return str(up if p.maximum is None or up <= p.maximum else p.default * 0.8)


def params_changed(workdir, name: str, value: str) -> tuple[set, str]:
    """The rules a dry run plans because their params changed, and the run's output."""
    text = snakemake(workdir, "-n", config=(*CONFIG, f"{name}={value}"), timeout=300).output
    if "Nothing to be done" in text:
        return set(), text
    reasons = text.split("Reasons:", 1)[1]
    m = re.search(r"params have changed since last execution:\n\s+(.+)\n", reasons)
    other = re.findall(r"\n    (\w[^:\n]*):\n", reasons)
    unexpected = [r for r in other if r not in ("params have changed since last execution",
                                                "input files updated by another job")]  # fmt: skip
    assert not unexpected, f"{name}={value}: planned for {unexpected}\n{reasons[:2000]}"
    return ({r.strip() for r in m.group(1).split(",")} if m else set()), text


SETTINGS = [p for p in kparams.PARAMS if p.name not in NOT_A_SETTING | CHANGES_THE_JOBS]


@pytest.mark.parametrize("param", SETTINGS, ids=[p.name for p in SETTINGS])
def test_a_changed_parameter_reruns_exactly_its_readers(demo_sort, param):
    planned, text = params_changed(demo_sort, param.name, changed_value(param))
    readers = set(param.readers) & DEMO_RULES
    # the report lists every parameter that changes a result; settings change none
    expected = readers | ({"report"} if param.readers else set())
    if param.name == "device":
        # the demo ran with device=cpu: the first GPU-capable rule shows the change, the
        # others are planned because their inputs will be updated
        assert planned and planned <= expected, text[-2000:]
        return
    if readers:
        # a rule downstream of another reader is planned for its updated input first
        assert planned <= expected and min_readers(readers) <= planned, text[-2000:]
    else:
        assert planned == expected, text[-2000:]


def min_readers(readers: set) -> set:
    """The readers that no other reader precedes (their params are what Snakemake reports)."""
    order = ["demo_recording", *kparams.SORT_RULES]
    first = min(order.index(r) for r in readers if r in order)
    return {order[first]}
