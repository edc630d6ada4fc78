"""Do two sorts of the same recording agree? (e.g. CPU vs GPU, capped vs uncapped GPU memory)

    python benchmarks/compare_sorts.py RUN_A/phy RUN_B/phy --gt rec_gt.npz

Prints, for two Phy folders of the same recording: the ground-truth units each sort found well
(accuracy >= the scorecard's threshold) and those only one of them found; the fraction of each
sort's spike times that the other has at exactly the same sample (final curated spikes); and,
when both folders sit in results folders with ``spikes.zarr``, the same fraction for the final
pass's spikes. Exit status 1 when the well-detected units differ or fewer than ``--min-same``
of the spike times coincide.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="first Phy folder")
    parser.add_argument("b", type=Path, help="second Phy folder")
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth .npz")
    parser.add_argument(
        "--min-same",
        type=float,
        default=0.99,
        help="required fraction of identical spike times (default 0.99)",
    )
    return parser.parse_args(argv)


def well_detected(phy: Path, gt: Path) -> set:
    from kilosnake.groundtruth.score import score_phy_folder

    score = score_phy_folder(phy, gt)
    threshold = score.summary["well_detected_accuracy"]
    return {row["gt_unit"] for row in score.per_unit if row["accuracy"] >= threshold}


def same_sample_fraction(times_a: np.ndarray, times_b: np.ndarray) -> float:
    """Fraction of ``times_a`` that ``times_b`` contains exactly."""
    return float(np.isin(times_a, times_b).mean()) if times_a.size else 1.0


def final_pass_times(phy: Path) -> np.ndarray | None:
    spikes = phy.parent / "spikes.zarr"
    if not spikes.is_dir():
        return None
    from kilosnake.io.store import open_store

    return np.asarray(open_store(spikes)["time"][...], np.int64)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    units = {name: well_detected(phy, args.gt) for name, phy in (("a", args.a), ("b", args.b))}
    print(
        f"well-detected GT units: A {len(units['a'])}, B {len(units['b'])}; "
        f"only A {sorted(units['a'] - units['b'])}, only B {sorted(units['b'] - units['a'])}"
    )
    fractions = []
    pairs = [
        (
            "Phy folder",
            np.load(args.a / "spike_times.npy").astype(np.int64),
            np.load(args.b / "spike_times.npy").astype(np.int64),
        )
    ]
    fa, fb = final_pass_times(args.a), final_pass_times(args.b)
    if fa is not None and fb is not None:
        pairs.append(("final pass", fa, fb))
    for what, ta, tb in pairs:
        ab, ba = same_sample_fraction(ta, tb), same_sample_fraction(tb, ta)
        fractions += [ab, ba]
        print(
            f"{what}: {ta.size} / {tb.size} spikes; same sample: {100 * ab:.3f} % of A in B, "
            f"{100 * ba:.3f} % of B in A"
        )
    agree = units["a"] == units["b"] and min(fractions) >= args.min_same
    print("agree" if agree else "DIFFER")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
