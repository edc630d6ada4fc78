"""The scorecard: a sorting's score against the ground truth as text."""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


#: SNR from which a GT unit is "detectable" in the headline benchmark figures
HEADLINE_SNR = 5.0

#: recall counted in the headline benchmark figures
HEADLINE_RECALL = 0.9


# --------------------------------------------------------------------------------------------
# scorecard text


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _scorecard_header(summary: dict) -> str:
    return (
        f"Ground-truth scorecard: {summary['n_gt_units']} GT units, "
        f"{summary['n_sorted_units']} sorted units; match tolerance "
        f"{summary['tolerance_ms']:g} ms ({summary['tolerance_samples']} samples at "
        f"{summary['sample_rate']:g} Hz)"
    )


def _unit_table(per_unit: list) -> str:
    columns = (
        ("gt_unit", "d", 7),
        ("snr", ".2f", 7),
        ("n_gt", "d", 8),
        ("sorted_unit", "d", 11),
        ("n_sorted", "d", 8),
        ("tp", "d", 8),
        ("fn", "d", 8),
        ("fp", "d", 8),
        ("accuracy", ".3f", 8),
        ("recall", ".3f", 6),
        ("precision", ".3f", 9),
    )
    header = " ".join(name.rjust(width) for name, _, width in columns)
    lines = [header, "-" * len(header)]
    for unit in per_unit:
        cells = []
        for name, spec, width in columns:
            value = unit[name]
            if name == "sorted_unit" and value < 0:
                value = None
            cells.append(_fmt(value, spec).rjust(width))
        lines.append(" ".join(cells))
    if not per_unit:
        lines.append("(no ground-truth units)")
    return "\n".join(lines)


def _summary_block(s: dict) -> str:
    rows = [
        ("GT units", s["n_gt_units"]),
        ("sorted units", s["n_sorted_units"]),
        ("matched GT units", s["n_matched"]),
        (
            f"well detected (accuracy >= {s['well_detected_accuracy']:g})",
            f"{s['n_well_detected']} / {s['n_gt_units']}",
        ),
        ("false-positive units", s["n_false_positive"]),
        ("redundant units", s["n_redundant"]),
        ("overmerged units", s["n_overmerged"]),
        (
            "mean accuracy / recall",
            f"{_fmt(s['mean_accuracy'], '.3f')} / {_fmt(s['mean_recall'], '.3f')}",
        ),
        ("mean precision (matched units)", _fmt(s["mean_precision_matched"], ".3f")),
    ]
    lines = ["Summary"] + [f"  {label:<36}{value}" for label, value in rows]
    tag = f"snr_ge_{HEADLINE_SNR:g}"
    if f"n_{tag}" in s:
        recall_key = f"n_recall_ge_{HEADLINE_RECALL:g}"
        lines.append(
            f"  SNR >= {HEADLINE_SNR:g}: {s[f'n_{tag}']} GT units, "
            f"{s[f'n_{tag}_recall_ge_{HEADLINE_RECALL:g}']} with recall >= {HEADLINE_RECALL:g}, "
            f"{s[f'n_{tag}_well_detected']} well detected"
        )
        lines.append(
            f"  {'SNR':>8} {'units':>6} {f'recall>={HEADLINE_RECALL:g}':>12} "
            f"{'well detected':>14} {'mean recall':>12} {'mean accuracy':>14}"
        )
        for g in s["snr_groups"]:
            lines.append(
                f"  {_snr_range_label(g['snr_min'], g['snr_max']):>8} "
                f"{g['n_units']:>6} {g[recall_key]:>12} {g['n_well_detected']:>14} "
                f"{_fmt(g['mean_recall'], '.3f'):>12} "
                f"{_fmt(g['mean_accuracy'], '.3f'):>14}"
            )
    return "\n".join(lines)


def _snr_range_label(lo, hi) -> str:
    if lo is None:
        return f"<{hi:g}"
    if hi is None:
        return f">={lo:g}"
    return f"{lo:g}-{hi:g}"
