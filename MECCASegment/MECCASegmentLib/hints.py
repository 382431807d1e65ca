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


USER_STYLES = ("edge", "interior", "random")


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
        rng = np.random.default_rng([self.seed, round_index])
        chosen: list[np.ndarray] = []
        for flat in rng.permutation(candidates):
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
    if not isinstance(spec, dict):
        raise InputError(f"{path}: the clicks file is a JSON object, {{\"coordinate_system\": \"RAS\", \"clicks\": "
                         f"[...]}}, not a {type(spec).__name__}; put a list of clicks under \"clicks\"")
    system = str(spec.get("coordinate_system", "")).upper()
    if system not in ("RAS", "LPS"):
        raise InputError(f"{path}: 'coordinate_system' must be \"RAS\" (Slicer) or \"LPS\" (ITK/DICOM)")
    flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)

    def to_index(point, what, inside=False):
        values = np.asarray(point, dtype=float)
        if values.shape != (3,) or not np.all(np.isfinite(values)):
            raise InputError(f"{path}: {what} must be three finite numbers, got {point!r}")
        index = image.world_to_index(values * flip)
        voxel = np.rint(index).astype(int)
        if inside and (np.any(voxel < 0) or np.any(voxel >= image.shape[::-1])):
            raise InputError(f"{path}: {what} at {system} ({', '.join(f'{v:g}' for v in values)}) mm is voxel (i, j, k) "
                             f"{tuple(voxel.tolist())}, outside the image (size {image.shape[::-1]}); check the "
                             "coordinate system and that the clicks belong to this image")
        return index

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
        rounds.setdefault(round_, []).append((to_index(click["point"], f"click {n}", inside=True), click["positive"]))
    roi = None
    if spec.get("roi"):
        corners = np.array([to_index(spec["roi"]["min"], "roi min"), to_index(spec["roi"]["max"], "roi max")])
        roi = (np.floor(corners.min(0)).astype(int), np.ceil(corners.max(0)).astype(int) + 1)
    return rounds, roi
