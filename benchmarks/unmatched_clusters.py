"""What the unmatched clusters of a scored Phy folder are, told from the ground truth.

    python benchmarks/unmatched_clusters.py results/mearec_static_300s_seed0/phy \\
        /work/cache/mearec/mearec_static_300s_seed0_gt.npz

Each sorted cluster without a Hungarian match (see :mod:`kilosnake.groundtruth.score`) is
compared with every GT unit: the lag from each of its spikes to the unit's nearest GT spike is
taken, and the GT unit with the most spikes within 3 ms names the kind of cluster:

* redundant: agreement >= 0.2 with some GT unit (as the scorecard counts it);
* shifted copy: >= 80 % of its spikes within 3 ms of one unit's, median lag beyond 0.4 ms;
* subset: >= 80 % within 3 ms, median lag within 0.4 ms (a few of a unit's spikes);
* other: the rest.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from kilosnake.groundtruth.score import score_phy_folder
from kilosnake.groundtruth.truth import load_ground_truth

NEAR_MS = 3.0
NEAR_FRACTION = 0.8


def signed_lags(cluster_times: np.ndarray, unit_times: np.ndarray) -> np.ndarray:
    """Lag (samples) from each cluster spike to the nearest spike of a GT unit."""
    i = np.clip(np.searchsorted(unit_times, cluster_times), 1, unit_times.size - 1)
    before, after = cluster_times - unit_times[i - 1], cluster_times - unit_times[i]
    return np.where(np.abs(before) < np.abs(after), before, after)


def nearest_unit(cluster_times, gt_times, gt_units, near: int):
    """The GT unit with the most cluster spikes within ``near`` samples: (unit, fraction, lag)."""
    best = (-1, 0.0, 0.0)
    for unit in np.unique(gt_units):
        lags = signed_lags(cluster_times, gt_times[gt_units == unit])
        close = np.abs(lags) <= near
        if close.mean() > best[1]:
            best = (int(unit), float(close.mean()), float(np.median(lags[close])))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phy", type=Path)
    parser.add_argument("gt", type=Path)
    args = parser.parse_args(argv)
    result = score_phy_folder(args.phy, args.gt)
    gt = load_ground_truth(args.gt)
    gt_times, gt_units = gt.times.astype(np.int64), gt.units
    rate = result.summary["sample_rate"]
    tolerance = result.summary["tolerance_samples"]
    near = int(round(NEAR_MS * 1e-3 * rate))
    times = np.load(args.phy / "spike_times.npy").astype(np.int64).ravel()
    clusters = np.load(args.phy / "spike_clusters.npy").ravel()
    with open(args.phy / "cluster_group.tsv") as fh:
        labels = {int(row[0]): row[1] for row in list(csv.reader(fh, delimiter="\t"))[1:]}
    matched = {u["sorted_unit"] for u in result.per_unit}
    kinds: dict = {}
    for j, cluster in enumerate(result.sorted_unit_ids):
        if cluster in matched:
            continue
        own = times[clusters == cluster]
        unit, fraction, lag = nearest_unit(own, gt_times, gt_units, near)
        if result.agreement[:, j].max() >= 0.2:
            kind = "redundant"
        elif fraction >= NEAR_FRACTION and abs(lag) > tolerance:
            kind = "shifted copy"
        elif fraction >= NEAR_FRACTION:
            kind = "subset"
        else:
            kind = "other"
        kinds.setdefault(kind, []).append((int(cluster), own.size, labels.get(int(cluster)), lag))
    for kind, rows in kinds.items():
        sizes = [r[1] for r in rows]
        good = sum(1 for r in rows if r[2] == "good")
        lags = sorted({r[3] for r in rows})
        print(
            f"{kind}: {len(rows)} clusters, {good} labelled good, {min(sizes)}-{max(sizes)} "
            f"spikes, median lags (samples) {lags}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
