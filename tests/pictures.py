"""Checks of the pictures the product draws: decoded, of the size their figure asks for, and not
blank.

A PNG signature or a byte count says nothing about what a picture shows; decoding it says how
large it is, and its pixels say whether anything was drawn. Sizes are the figures' ``figsize``
times the DPI they are saved at.
"""

import io
from pathlib import Path

import matplotlib.image
import numpy as np

#: (width, height) in pixels of each picture: figsize x DPI (90)
INPUT_CHECK = (1350, 675)  # (15, 7.5) in
TRACES = (1350, 666)  # (15, 7.4) in
BATCHES = (1260, 630)  # (14, 7) in
#: (width, height) of a unit panel (inline SVG, kilosnake.report.svg)
UNIT = (1080, 290)


def drift_size(n_shanks: int = 1) -> tuple[int, int]:
    """Size of the drift picture: (6.5 per shank, 10) in at 90 DPI."""
    return round(6.5 * n_shanks * 90), 900


#: a picture counts as drawn when at least this fraction of its pixels differs from its most
#: common colour (the background) ...
MIN_INK = 0.02
#: ... and its RGB values spread at least this much (0..1 scale)
MIN_STD = 0.05


def read_picture(source) -> np.ndarray:
    """Decode a PNG (a path or its bytes) to an (height, width, channels) float array in 0..1."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    else:
        source = Path(source)
    image = matplotlib.image.imread(source, format="png")
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    return image


def ink_fraction(image: np.ndarray) -> float:
    """Fraction of pixels whose colour differs from the most common one."""
    rgb = np.ascontiguousarray(image[..., :3]).reshape(-1, 3)
    _, counts = np.unique(rgb, axis=0, return_counts=True)
    return 1.0 - counts.max() / rgb.shape[0]


def assert_picture(source, size: tuple[int, int] | None = None, min_ink: float = MIN_INK):
    """Check that ``source`` is a PNG of ``size`` (width, height) with something drawn on it;
    return the decoded image."""
    image = read_picture(source)
    height, width = image.shape[:2]
    if size is not None:
        assert (width, height) == tuple(size), f"picture is {width}x{height}, expected {size}"
    rgb = image[..., :3]
    assert float(rgb.std()) > MIN_STD, f"picture is blank (pixel spread {rgb.std():.3f})"
    ink = ink_fraction(image)
    assert ink > min_ink, f"picture is nearly blank ({100 * ink:.1f}% of pixels drawn)"
    return image
