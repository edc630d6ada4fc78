"""A parameter reruns exactly the rules that read it: after a demo sort, a dry run with each
parameter of the table changed plans its readers (by the table) and what follows from them, for
no other reason; a workflow or run-time setting plans nothing."""

import re

import pytest
from workflow_runs import CONFIG, TARGET, planned_rules, snakemake

import kilosnake.params as kparams

pytestmark = pytest.mark.slow

#: rules of the demo's workflow (a single-shank recording sorted unscattered)
DEMO_RULES = {"demo_recording", *kparams.RULE_ORDER}
#: the recording's own description and the set of recordings: they say what is sorted
NOT_A_SETTING = {"dat", "probe", "n_channels", "dtype", "sample_rate", "uv_per_bit",
                 "recordings", "demo_preset", "recording", "format", "stream"}  # fmt: skip


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


SETTINGS = [p for p in kparams.PARAMS if p.name not in NOT_A_SETTING]


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


#: what a change of lam reruns in a scattered run: its readers (the final pass in blocks, their
#: gather) and what follows; not the preprocessing, although its block stores are not on disk
LAM_RERUNS = {"learn", "final_pass_block", "gather_spikes", "traces_plot", "merge", "split",
              "cutoff", "export_phy", "scorecard", "report"}  # fmt: skip


def test_a_parameter_reruns_only_its_readers_after_a_scatter_change(demo_sort):
    text = snakemake(
        demo_sort, "-n", config=(*CONFIG, "scatter_blocks=3", "lam=12"), timeout=300
    ).output
    assert planned_rules(text) == LAM_RERUNS, text[-3000:]
    assert text.count("rule final_pass_block:") == 3


def test_a_scattered_sort_is_kept_whatever_scatter_blocks_says(tmp_path):
    snakemake(tmp_path, TARGET, config=(*CONFIG, "scatter_blocks=2"))
    for n in (1, 3):
        text = snakemake(tmp_path, TARGET, "-n", config=(*CONFIG, f"scatter_blocks={n}")).output
        assert "Nothing to be done" in text, f"scatter_blocks={n}: {text[-3000:]}"
    # a change that reruns the preprocessing splits it anew; the old split's stores go
    text = snakemake(tmp_path, TARGET, config=(*CONFIG, "scatter_blocks=3", "scaleproc=250")).output
    assert text.count("rule preprocess_block:") == 3, text[-3000:]
    blocks = sorted(p.name for p in (tmp_path / "results/demo/blocks").iterdir())
    assert blocks == [f"preprocessed.{b}-of-3.zarr" for b in range(3)]
