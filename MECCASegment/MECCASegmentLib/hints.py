"""Clicks, the signed hint map built from them, and the seeded simulated user of method.md.

Positions here are numpy array indices (axis 0, 1, 2) = (k, j, i) of an ITK/Slicer image; the
session converts from ITK (i, j, k) indices and world coordinates at its boundary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric

from .io import InputError

HINT_SIGMA = 2.0  # voxels
GEODESIC_TAU = 2.0  # voxels: in a homogeneous region the hint fades about as far as the Gaussian's
GEODESIC_CONTRAST = 4.0  # per unit of the z-scored image's gradient: an edge of 1 SD per voxel costs ~4 voxels
HINT_ENCODINGS = ("gaussian", "geodesic")
SURFACE_BAND = 2  # the simulated user clicks within this many voxels of the true surface


@dataclass(frozen=True)
class Click:
    """A user click: + where the object should extend, - where it should retract."""

    position: tuple[int, int, int]  # array index (k, j, i)
    positive: bool

    def to_dict(self) -> dict:
        return {"position": list(self.position), "positive": self.positive}


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


def encode_hints(encoding: str, image: np.ndarray, clicks: list[Click],
                 offset: tuple[int, ...] = (0, 0, 0)) -> np.ndarray:
    """The hint map a model was trained with (its ``hint_encoding``) for ``image``'s box."""
    if encoding == "geodesic":
        return geodesic_hint_map(image, clicks, offset)
    if encoding == "gaussian":
        return hint_map(image.shape, clicks, offset)
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


class SimulatedUser:
    """Seeded stand-in for a clinician (training and evaluation).

    Each round it clicks k misclassified voxels within 2 voxels of the ground-truth surface,
    spread at least ``min_separation`` voxels apart, signed + for missed foreground and - for
    false positives. With no such voxel it clicks the deepest point of the largest error region
    (the point farthest from its border, as RITM and DeepEdit do). The same seed, label and
    prediction always give the same clicks.
    """

    def __init__(self, label: np.ndarray, seed: int = 0, min_separation: float = 3.0):
        self.label = label > 0
        self.seed = seed
        self.min_separation = min_separation
        inside = ndimage.distance_transform_edt(self.label)
        outside = ndimage.distance_transform_edt(~self.label)
        self.band = (self.label & (inside <= SURFACE_BAND)) | (~self.label & (outside <= SURFACE_BAND))

    def clicks(self, prediction: np.ndarray, count: int, round_index: int) -> list[Click]:
        if count <= 0:
            return []
        rng = np.random.default_rng([self.seed, round_index])
        false_negative = self.label & ~prediction
        errors = false_negative | (~self.label & prediction)
        if not errors.any():
            return []
        candidates = np.flatnonzero(errors & self.band)
        if candidates.size == 0:
            return [self._deepest_error_click(errors, false_negative)]
        chosen: list[np.ndarray] = []
        for flat in rng.permutation(candidates):
            point = np.array(np.unravel_index(flat, errors.shape))
            if all(np.linalg.norm(point - other) >= self.min_separation for other in chosen):
                chosen.append(point)
                if len(chosen) == count:
                    break
        return [Click(tuple(int(v) for v in p), bool(false_negative[tuple(p)])) for p in chosen]

    @staticmethod
    def _deepest_error_click(errors: np.ndarray, false_negative: np.ndarray) -> Click:
        components, n = ndimage.label(errors)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sizes[0] = 0
        largest = components == int(np.argmax(sizes))
        depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
        point = np.unravel_index(int(np.argmax(depth)), errors.shape)
        return Click(tuple(int(v) for v in point), bool(false_negative[point]))


def read_clicks(path: str | Path, image) -> tuple[dict[int, list[tuple[np.ndarray, bool]]], tuple | None]:
    """Clicks file -> {round: [(continuous ijk, positive)]} and an optional ROI box in (i, j, k).

    ``image`` is the io.Volume the clicks belong to (its geometry maps world to voxel).

    Format: {"coordinate_system": "RAS" | "LPS", "clicks": [{"point": [x, y, z], "positive": true,
    "round": 1}, ...], "roi": {"min": [x, y, z], "max": [x, y, z]}}; "round" defaults to 1.
    """
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise InputError(f"{path}: clicks file not found") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    system = str(spec.get("coordinate_system", "")).upper()
    if system not in ("RAS", "LPS"):
        raise InputError(f"{path}: 'coordinate_system' must be \"RAS\" (Slicer) or \"LPS\" (ITK/DICOM)")
    flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)

    def to_index(point, what):
        values = np.asarray(point, dtype=float)
        if values.shape != (3,) or not np.all(np.isfinite(values)):
            raise InputError(f"{path}: {what} must be three finite numbers, got {point!r}")
        return image.world_to_index(values * flip)

    rounds: dict[int, list] = {}
    clicks = spec.get("clicks")
    if not isinstance(clicks, list) or not clicks:
        raise InputError(f"{path}: 'clicks' must be a non-empty list")
    for n, click in enumerate(clicks):
        if not isinstance(click, dict) or "point" not in click or not isinstance(click.get("positive"), bool):
            raise InputError(f"{path}: click {n} needs \"point\" [x, y, z] and \"positive\" true/false")
        round_ = int(click.get("round", 1))
        if round_ < 1:
            raise InputError(f"{path}: click {n} has round {round_}; rounds start at 1")
        rounds.setdefault(round_, []).append((to_index(click["point"], f"click {n}"), click["positive"]))
    roi = None
    if spec.get("roi"):
        corners = np.array([to_index(spec["roi"]["min"], "roi min"), to_index(spec["roi"]["max"], "roi max")])
        roi = (np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int) + 1)
    return rounds, roi
