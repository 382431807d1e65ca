"""Class-agnostic training objects made from a scan, so the policy learns to follow clicks on
structures of every size and shape rather than to recall the labelled ones.

A scan with one labelled structure holds many other objects a radiologist might click on. Each
call draws one, as a binary mask on the scan's grid:

- ``supervoxels``: a few adjacent SLIC supervoxels of a random box (regions of similar intensity,
  the shape set by the image's own edges);
- ``threshold``: the connected component of a random voxel among voxels of similar (smoothed)
  intensity, inside a random box (a bright or dark blob, a vessel, a cavity);
- ``part``: the labelled structure cut by a random plane (the piece holding a random voxel of it);
- ``reshaped``: the labelled structure grown or shrunk by 1-3 voxels (a boundary drawn elsewhere).

Objects smaller than ``MIN_VOXELS`` or filling more than ``MAX_FILL`` of their box are drawn
again; after ``ATTEMPTS`` failures the labelled structure itself is returned.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

KINDS = ("supervoxels", "threshold", "part", "reshaped")
MIN_VOXELS = 150
MAX_FILL = 0.35  # of the random box the object was drawn in
ATTEMPTS = 6
BOX_RANGE = (20, 64)  # voxels per side of the random box supervoxels and thresholds are drawn in


def synthetic_object(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                     kinds: tuple[str, ...] = KINDS) -> np.ndarray:
    """One object of a random kind (one of ``kinds``) on ``image``'s grid (normalised image, numpy
    order); ``label`` is the scan's labelled structure (may be empty). Returns a bool mask."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {KINDS}, got {kinds!r}")
    label = label > 0
    for _ in range(ATTEMPTS):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind in ("part", "reshaped") and not label.any():
            continue
        mask = _DRAW[kind](image, label, rng)
        if mask is not None and np.count_nonzero(mask) >= MIN_VOXELS:
            return mask
    return label


def _random_box(shape, rng: np.random.Generator) -> tuple[slice, ...]:
    size = [int(min(s, rng.integers(BOX_RANGE[0], BOX_RANGE[1] + 1))) for s in shape]
    lo = [int(rng.integers(0, s - n + 1)) for s, n in zip(shape, size)]
    return tuple(slice(low, low + n) for low, n in zip(lo, size))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return components == int(np.argmax(np.bincount(components.ravel())[1:])) + 1


def _in_box(mask: np.ndarray, shape, box) -> np.ndarray | None:
    """The object placed in the scan, or None when it fills too much of its box."""
    if np.count_nonzero(mask) > MAX_FILL * mask.size:
        return None
    full = np.zeros(shape, bool)
    full[box] = mask
    return full


def _supervoxels(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    box = _random_box(image.shape, rng)
    region = image[box]
    voxels_per_segment = float(rng.uniform(150, 1500))
    segments = slic(region.astype(np.float64), n_segments=max(int(region.size / voxels_per_segment), 2),
                    compactness=float(rng.uniform(0.05, 0.3)), channel_axis=None, start_label=1,
                    enforce_connectivity=True)
    chosen = {int(segments[tuple(int(rng.integers(s)) for s in region.shape)])}
    for _ in range(int(rng.integers(0, 4))):  # grow by up to three neighbouring supervoxels
        current = np.isin(segments, list(chosen))
        neighbours = np.unique(segments[ndimage.binary_dilation(current) & ~current])
        if neighbours.size == 0:
            break
        chosen.add(int(rng.choice(neighbours)))
    return _in_box(np.isin(segments, list(chosen)), image.shape, box)


def _threshold(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    box = _random_box(image.shape, rng)
    region = ndimage.gaussian_filter(image[box].astype(np.float32), float(rng.uniform(0.5, 1.5)))
    seed = tuple(int(rng.integers(s)) for s in region.shape)
    width = float(rng.uniform(0.2, 0.8)) * max(float(region.std()), 1e-6)
    similar = np.abs(region - region[seed]) <= width
    components, _ = ndimage.label(similar)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(components == components[seed]))
    return _in_box(_largest_component(mask), image.shape, box) if mask.any() else None


def _part(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    points = np.argwhere(label)
    through = points[int(rng.integers(len(points)))]
    normal = rng.normal(size=3)
    grids = np.ogrid[tuple(slice(0, s) for s in label.shape)]
    side = sum((g - c) * n for g, c, n in zip(grids, through, normal)) >= 0
    return _largest_component(label & side)


def _reshaped(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    iterations = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        return ndimage.binary_dilation(label, iterations=iterations)
    return _largest_component(ndimage.binary_erosion(label, iterations=iterations))


_DRAW = {"supervoxels": _supervoxels, "threshold": _threshold, "part": _part, "reshaped": _reshaped}


def thick_slices(image: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image as a scan with slices 2-5 times thicker along a random axis shows it once put back
    on a near-isotropic grid (as the session's working grid does): each slab of that many voxels
    averaged, then interpolated linearly between slab centres."""
    axis = int(rng.integers(3))
    factor = int(rng.integers(2, 6))
    length = image.shape[axis]
    if length < 2 * factor:
        return image
    slabs = np.add.reduceat(np.where(valid, image, 0.0), np.arange(0, length, factor), axis=axis)
    counts = np.add.reduceat(valid.astype(np.float32), np.arange(0, length, factor), axis=axis)
    means = slabs / np.maximum(counts, 1.0)
    centres = np.minimum(np.arange(0, length, factor) + (factor - 1) / 2.0, length - 1)
    positions = np.interp(np.arange(length), centres, np.arange(len(centres)))
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, len(centres) - 1)
    weight = (positions - lower).reshape([-1 if a == axis else 1 for a in range(3)])
    out = np.take(means, lower, axis=axis) * (1 - weight) + np.take(means, upper, axis=axis) * weight
    return np.where(valid, out, 0.0).astype(np.float32)
