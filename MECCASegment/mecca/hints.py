"""The hint channel: how a session's clicks become the signed map the networks see (method.md).

Positions are numpy (k, j, i) indices (geometry.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric
from skimage.segmentation import slic

from .clicks import Click

HINT_SIGMA = 2.0  # voxels
GEODESIC_TAU = 2.0  # voxels: in a homogeneous region the hint fades about as far as the Gaussian's
GEODESIC_CONTRAST = 4.0  # per unit of the z-scored image's gradient: an edge of 1 SD per voxel costs ~4 voxels
SUPERVOXEL_RADIUS = 6  # voxels: the window a click's supervoxel is found in ...
SUPERVOXEL_CELLS = 16  # ... cut into this many SLIC cells (about 5^3 voxels each)
HINT_ENCODINGS = ("gaussian", "geodesic", "supervoxel")


def hint_map(shape: tuple[int, ...], clicks: list[Click], offset: tuple[int, ...] = (0, 0, 0),
             sigma: float = HINT_SIGMA) -> np.ndarray:
    """h = G(S+) - G(S-) on the box of ``shape`` starting at ``offset``, in [-1, 1].

    G is the maximum over clicks of a Gaussian of peak 1; only a window of 3 sigma around each
    click is touched, so the cost does not grow with the ROI. On a voxel clicked more than once
    the latest click counts: a user who changes their mind is not cancelled out.
    """
    def gaussian(grids, centre, _window):
        dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        return np.exp(-dist2 / (2 * sigma * sigma))

    return _signed_bumps(shape, clicks, offset, int(math.ceil(3 * sigma)), gaussian)


def geodesic_hint_map(image: np.ndarray, clicks: list[Click], offset: tuple[int, ...] = (0, 0, 0),
                      tau: float = GEODESIC_TAU, contrast: float = GEODESIC_CONTRAST) -> np.ndarray:
    """h = exp(-D+/tau) - exp(-D-/tau) on ``image`` (normalised, its box starting at ``offset``).

    D is the geodesic distance to the click (method.md's option, as in DeepIGeoS): a path costs
    sqrt(1 + (contrast |grad b|)^2) per voxel of length, so a click's hint follows the region it
    was made in and fades across an edge. Computed with scikit-image's minimum-cost path in a
    window of 4 tau around each click (D is at least the Euclidean distance, so nothing beyond
    reaches exp(-4)); the latest click on a voxel counts, as in ``hint_map``. A click outside
    the box gives no hint (no path starts there).
    """
    def geodesic(_grids, centre, window):
        patch = image[window].astype(np.float32)
        if any(not 0 <= c < s for c, s in zip(centre, patch.shape)):
            return np.zeros(patch.shape)  # a path needs its click inside the box
        gradient = ndimage.gaussian_gradient_magnitude(patch, 1.0)
        distance, _ = MCP_Geometric(np.sqrt(1.0 + (contrast * gradient) ** 2), fully_connected=True).find_costs(
            [tuple(int(c) for c in centre)])
        return np.exp(-distance / tau)

    return _signed_bumps(image.shape, clicks, offset, int(math.ceil(4 * tau)), geodesic)


def supervoxel_hint_map(image: np.ndarray, clicks: list[Click], offset: tuple[int, ...] = (0, 0, 0)) -> np.ndarray:
    """h = +1 on the supervoxel of each foreground click, -1 on each background click's, 0 elsewhere.

    BS-IRIS's supervoxel clicking (research/baselines, the paper's Table 1 row): a click marks the
    region it falls in, as a short scribble along the image would. The paper does not say how its
    supervoxels are made; here the cell is SLIC's (the advice regions' settings) that holds the
    click, in a window of SUPERVOXEL_RADIUS around it, so a click costs the same in any ROI. The
    latest click on a voxel counts, as in ``hint_map``.
    """
    def supervoxel(_grids, centre, window):
        patch = image[window].astype(np.float64)
        if any(not 0 <= c < s for c, s in zip(centre, patch.shape)):
            return np.zeros(patch.shape)  # the click lies outside the box
        cells = slic(patch, n_segments=SUPERVOXEL_CELLS, compactness=0.1, channel_axis=None, start_label=1,
                     enforce_connectivity=True)
        return cells == cells[tuple(int(c) for c in centre)]

    return _signed_bumps(image.shape, clicks, offset, SUPERVOXEL_RADIUS, supervoxel)


def encode_hints(encoding: str, image: np.ndarray, clicks: list[Click],
                 offset: tuple[int, ...] = (0, 0, 0)) -> np.ndarray:
    """The hint map a model was trained with (its ``hint_encoding``) for ``image``'s box."""
    if encoding == "geodesic":
        return geodesic_hint_map(image, clicks, offset)
    if encoding == "gaussian":
        return hint_map(image.shape, clicks, offset)
    if encoding == "supervoxel":
        return supervoxel_hint_map(image, clicks, offset)
    raise ValueError(f"hint encoding must be one of {HINT_ENCODINGS}, got {encoding!r}")


def _signed_bumps(shape, clicks: list[Click], offset, radius: int, bump) -> np.ndarray:
    """Positive minus negative maximum of per-click bumps of peak 1, each computed by
    ``bump(grids, centre, window)`` in the window of ``radius`` voxels around its click
    (``centre`` relative to the window)."""
    positive = np.zeros(shape, np.float32)
    negative = np.zeros(shape, np.float32)
    latest = {click.position: click for click in clicks}  # a later click on a voxel replaces the earlier one
    for click in latest.values():
        centre = [c - o for c, o in zip(click.position, offset)]
        lo = [max(c - radius, 0) for c in centre]
        hi = [min(c + radius + 1, s) for c, s in zip(centre, shape)]
        if any(h <= l for l, h in zip(lo, hi)):
            continue  # the click's window lies outside this box
        window = tuple(slice(l, h) for l, h in zip(lo, hi))
        grids = np.ogrid[tuple(slice(0, h - l) for l, h in zip(lo, hi))]
        values = bump(grids, [c - l for c, l in zip(centre, lo)], window).astype(np.float32)
        target = positive if click.positive else negative
        np.maximum(target[window], values, out=target[window])
    return positive - negative
