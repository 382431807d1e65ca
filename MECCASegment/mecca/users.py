"""The seeded simulated users of training and evaluation (method.md, and the clicks people make).

Positions are numpy (k, j, i) indices (geometry.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .clicks import Click
from .defaults import USER_STYLES

SURFACE_BAND = 2  # the edge user clicks within this many voxels of the true surface




class SimulatedUser:
    """Seeded stand-in for a clinician (training and evaluation), in one of three click styles.

    - ``edge`` (the paper's, method.md): misclassified voxels within 2 voxels of the true surface,
      spread at least ``min_separation`` voxels apart; with no such voxel, an interior click.
    - ``interior`` (as a person clicks, and RITM/DeepEdit simulate): the deepest point of the
      largest error region (farthest from its border); for a further click in the same round the
      ball of that depth around the previous click is set aside and the next largest region's
      deepest point is taken, so a round's clicks go to different errors.
    - ``random``: misclassified voxels anywhere, spread ``min_separation`` apart.

    Clicks are signed + on missed foreground and - on false positives. The same seed, style,
    label and prediction always give the same clicks.
    """

    def __init__(self, label: np.ndarray, seed: int = 0, min_separation: float = 3.0, style: str = "edge"):
        if style not in USER_STYLES:
            raise ValueError(f"the simulated user's style must be one of {', '.join(USER_STYLES)}, got {style!r}")
        self.label = label > 0
        self.seed = seed
        self.style = style
        self.min_separation = min_separation
        if style == "edge":
            inside = ndimage.distance_transform_edt(self.label)
            outside = ndimage.distance_transform_edt(~self.label)
            self.band = (self.label & (inside <= SURFACE_BAND)) | (~self.label & (outside <= SURFACE_BAND))

    def clicks(self, prediction: np.ndarray, count: int, round_index: int) -> list[Click]:
        if count <= 0:
            return []
        false_negative = self.label & ~prediction
        errors = false_negative | (~self.label & prediction)
        if not errors.any():
            return []
        if self.style == "interior":
            return interior_clicks(errors, false_negative, count)
        candidates = np.flatnonzero(errors & self.band if self.style == "edge" else errors)
        if candidates.size == 0:
            return interior_clicks(errors, false_negative, 1)
        # every voxel of the grid draws a fixed random rank and the candidates go in rank order: a
        # uniformly random order, as a permutation of the candidates would give, but one voxel more or
        # less among them (a voxel decided the other way in bfloat16) leaves the other clicks as they
        # were instead of reshuffling them all (docs/results.md, "The same session on any processor")
        ranks = np.random.default_rng([self.seed, round_index]).random(errors.size, dtype=np.float32)
        chosen: list[np.ndarray] = []
        for flat in candidates[np.argsort(ranks[candidates], kind="stable")]:
            point = np.array(np.unravel_index(flat, errors.shape))
            if all(np.linalg.norm(point - other) >= self.min_separation for other in chosen):
                chosen.append(point)
                if len(chosen) == count:
                    break
        return [Click(tuple(int(v) for v in p), bool(false_negative[tuple(p)])) for p in chosen]


def interior_clicks(errors: np.ndarray, false_negative: np.ndarray, count: int) -> list[Click]:
    """Up to ``count`` clicks at the deepest points of the largest error regions (see
    ``SimulatedUser``): each click sets aside the ball of its depth, then the largest remaining
    region gives the next. Deterministic; depth counts the array's border as a region border."""
    remaining = errors.copy()
    clicks: list[Click] = []
    for _ in range(count):
        components, n = ndimage.label(remaining)
        if n == 0:
            break
        largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
        box = ndimage.find_objects(components, max_label=largest)[largest - 1]
        region = components[box] == largest
        depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1, 1:-1]
        local = np.unravel_index(int(np.argmax(depth)), region.shape)
        point = tuple(int(s.start + v) for s, v in zip(box, local))
        clicks.append(Click(point, bool(false_negative[point])))
        radius = float(depth[local])
        lo = [max(p - int(radius), 0) for p in point]
        hi = [min(p + int(radius) + 1, s) for p, s in zip(point, errors.shape)]
        grids = np.ogrid[tuple(slice(low, high) for low, high in zip(lo, hi))]
        ball = sum((g - p) ** 2 for g, p in zip(grids, point)) <= radius * radius
        remaining[tuple(slice(low, high) for low, high in zip(lo, hi))] &= ~ball
    return clicks
