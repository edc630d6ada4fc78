"""The scorer's command line: ``kilosnake-score --gt GT.npz SORTING`` (a Phy folder or a
``spikes.zarr``)."""

from __future__ import annotations

import argparse
import logging
import sys

from kilosnake.errors import KilosnakeError
from kilosnake.groundtruth.matching import (
    DEFAULT_TOLERANCE_MS,
)
from kilosnake.groundtruth.score import DEFAULT_WELL_DETECTED_ACCURACY, score_sorting
from kilosnake.runtime.logs import add_default_handler

# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The ``kilosnake-score`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="kilosnake-score",
        description="Score a sorting (Phy folder or spikes.zarr) against ground truth.",
    )
    parser.add_argument("sorting", help="Phy folder or spikes.zarr")
    parser.add_argument(
        "--gt", required=True, help="ground-truth .npz (spike_times, spike_units, optional snr)"
    )
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=None,
        help="sampling rate in Hz (default: from the sorting or the ground truth's .meta.json)",
    )
    parser.add_argument(
        "--tolerance-ms",
        type=float,
        default=DEFAULT_TOLERANCE_MS,
        help="largest time difference of matching spikes (default %(default)s)",
    )
    parser.add_argument(
        "--well-detected",
        type=float,
        default=DEFAULT_WELL_DETECTED_ACCURACY,
        help="accuracy of a well-detected unit (default %(default)s)",
    )
    parser.add_argument(
        "--min-match-agreement",
        type=float,
        default=0.0,
        help="Hungarian pairs with agreement at or below this are not matches "
        "(default %(default)s)",
    )
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    parser.add_argument("--log-level", default="WARNING", help="default %(default)s")
    return parser


def main(argv=None) -> int:
    """Command line: print the scorecard of a sorting; optionally write JSON."""
    args = build_parser().parse_args(argv)

    handler = add_default_handler(args.log_level)
    try:
        result = score_sorting(
            args.sorting,
            args.gt,
            sample_rate=args.sample_rate,
            tolerance_ms=args.tolerance_ms,
            well_detected_accuracy=args.well_detected,
            min_match_agreement=args.min_match_agreement,
        )
    except KilosnakeError as err:
        print(f"kilosnake-score: {err}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger("kilosnake").removeHandler(handler)
    print(result.to_text(), end="")
    if args.json:
        result.to_json(args.json)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
