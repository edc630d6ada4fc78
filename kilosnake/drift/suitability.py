"""Whether a probe (shank) suits registration: enough distinct rows over enough depth."""

from __future__ import annotations

import numpy as np

from kilosnake.io.probe import Probe

# --- when registration is meaningful -------------------------------------------------------
MIN_EXTENT_UM = 200.0
MIN_ROWS_PER_100UM = 3.0


# --------------------------------------------------------------------------------------------
# can this probe be registered?


def distinct_rows(y, tolerance_um: float = 1.0) -> np.ndarray:
    """Sorted distinct contact depths, merging depths closer than ``tolerance_um``."""
    y = np.sort(np.asarray(y, dtype=np.float64))
    if y.size == 0:
        return y
    keep = np.concatenate([[True], np.diff(y) > tolerance_um])
    return y[keep]


def shank_supports_registration(y) -> tuple[bool, str]:
    """Whether contacts at depths ``y`` (one shank) allow a meaningful drift estimate.

    Registration needs a vertical extent of at least :data:`MIN_EXTENT_UM` (units must be able to
    move several bins and still be seen) and at least :data:`MIN_ROWS_PER_100UM` distinct contact
    depths per 100 µm (the interpolation across channels needs contacts closer than the kriging
    length scale; Neuropixels 1.0 has 5, 2.0 has 6.7).

    Returns
    -------
    ok : bool
    reason : str
        Why not (empty when ``ok``).
    """
    rows = distinct_rows(y)
    extent = float(rows[-1] - rows[0]) if rows.size else 0.0
    if extent < MIN_EXTENT_UM:
        return False, (
            f"vertical extent {extent:.0f} um is below {MIN_EXTENT_UM:.0f} um "
            "(tetrode, single row or short probe)"
        )
    density = 100.0 * (rows.size - 1) / extent
    if density < MIN_ROWS_PER_100UM:
        return False, (
            f"{density:.1f} distinct contact rows per 100 um, below "
            f"{MIN_ROWS_PER_100UM:g} (contacts too sparse to interpolate across)"
        )
    return True, ""


def registration_check(probe: Probe, nblocks: int) -> tuple[bool, str]:
    """Whether the drift stage runs at all, and why not."""
    if nblocks == 0:
        return False, "nblocks = 0 (drift correction switched off in the config)"
    for shank in probe.shank_ids():
        ok, reason = shank_supports_registration(probe.yc[probe.kcoords == shank])
        if not ok:
            return False, f"shank {shank:g}: {reason}"
    return True, ""
