"""A user's click (a voxel and a sign), and clicks files in world coordinates.

Positions are numpy (k, j, i) indices (geometry.py); a clicks file gives world points in RAS or
LPS, read into continuous ITK (i, j, k) indices of the image they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, read_json_input


@dataclass(frozen=True)
class Click:
    """A user click: + where the object should extend, - where it should retract."""

    position: tuple[int, int, int]  # array index (k, j, i)
    positive: bool

    def to_dict(self) -> dict:
        return {"position": list(self.position), "positive": self.positive}


def read_clicks(path: str | Path, image) -> tuple[dict[int, list[tuple[np.ndarray, bool]]], tuple | None]:
    """Clicks file -> {round: [(continuous ijk, positive)]} and an optional ROI box in (i, j, k).

    ``image`` is the io.Volume the clicks belong to (its geometry maps world to voxel).

    Format: {"coordinate_system": "RAS" | "LPS", "clicks": [{"point": [x, y, z], "positive": true,
    "round": 1}, ...], "roi": {"min": [x, y, z], "max": [x, y, z]}}; "round" defaults to 1.
    """
    spec = read_json_input(path, "clicks file")
    if not isinstance(spec, dict):
        raise InputError(f"{path}: the clicks file is a JSON object, {{\"coordinate_system\": \"RAS\", \"clicks\": "
                         f"[...]}}, not a {type(spec).__name__}; put a list of clicks under \"clicks\"")
    system = str(spec.get("coordinate_system", "")).upper()
    if system not in ("RAS", "LPS"):
        raise InputError(f"{path}: 'coordinate_system' must be \"RAS\" (Slicer) or \"LPS\" (ITK/DICOM)")
    flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)

    def to_index(point, what, inside=False):
        if not isinstance(point, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point):
            raise InputError(f"{path}: {what} must be three numbers [x, y, z] in mm, got {point!r}")
        values = np.asarray(point, dtype=float)
        if values.shape != (3,) or not np.all(np.isfinite(values)):
            raise InputError(f"{path}: {what} must be three finite numbers, got {point!r}")
        index = image.world_to_index(values * flip)
        voxel = np.rint(index).astype(int)
        if inside and (np.any(voxel < 0) or np.any(voxel >= image.size_ijk)):
            raise InputError(f"{path}: {what} at {system} ({', '.join(f'{v:g}' for v in values)}) mm is voxel (i, j, k) "
                             f"{tuple(voxel.tolist())}, outside the image (size {image.size_ijk}); check the "
                             "coordinate system and that the clicks belong to this image")
        return index

    rounds: dict[int, list] = {}
    clicks = spec.get("clicks")
    if not isinstance(clicks, list) or not clicks:
        raise InputError(f"{path}: 'clicks' must be a non-empty list")
    for n, click in enumerate(clicks):
        if not isinstance(click, dict) or "point" not in click or not isinstance(click.get("positive"), bool):
            raise InputError(f"{path}: click {n} needs \"point\" [x, y, z] and \"positive\" true/false")
        round_ = click.get("round", 1)
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 1:
            raise InputError(f"{path}: click {n} has round {round_!r}; rounds are whole numbers from 1")
        rounds.setdefault(round_, []).append((to_index(click["point"], f"click {n}", inside=True), click["positive"]))
    roi = None
    if spec.get("roi"):
        if not isinstance(spec["roi"], dict) or not {"min", "max"} <= set(spec["roi"]):
            raise InputError(f"{path}: 'roi' must be {{\"min\": [x, y, z], \"max\": [x, y, z]}}")
        corners = np.array([to_index(spec["roi"]["min"], "roi min"), to_index(spec["roi"]["max"], "roi max")])
        flat = [axis for axis, (a, b) in enumerate(zip(*corners)) if np.isclose(a, b)]
        if flat:
            raise InputError(f"{path}: the roi's min and max are equal along {', '.join('ijk'[a] for a in flat)}: a box "
                             "of no size; give two opposite corners of the region")
        roi = (tuple(int(v) for v in np.floor(corners.min(0))), tuple(int(v) for v in np.ceil(corners.max(0)) + 1))
    return rounds, roi
