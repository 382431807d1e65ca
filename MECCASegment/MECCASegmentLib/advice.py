"""Interaction guidance: SLIC supervoxels of the ROI ranked by the confidence of the last actions.

The supervoxels where the action-confidence network doubts the policy most are where a click
is likely to help; the lowest-ranked five are offered as "click here next" regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.segmentation import slic

ADVICE_COUNT = 5


def segments_for_round(round_index: int) -> int:
    """SLIC granularity: 100 supervoxels at the first round, fewer as the result settles."""
    return max(100 - 20 * round_index, 20)


def supervoxels(image_norm: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC labels (1..n) of a normalised ROI, with the paper's settings."""
    return slic(image_norm, n_segments=n_segments, compactness=0.1, spacing=np.array([2.0, 2.0, 2.0]),
                channel_axis=None, start_label=1, enforce_connectivity=True)


@dataclass(frozen=True)
class AdviceRegion:
    """One suggested region: its rank (1 = least confident), a voxel inside it near its centre
    (array index within the ROI), its size and its mean action confidence."""

    rank: int
    label: int
    centre: tuple[int, int, int]
    voxel_count: int
    mean_confidence: float


def rank_regions(labels: np.ndarray, confidence: np.ndarray, count: int = ADVICE_COUNT) -> list[AdviceRegion]:
    """The ``count`` supervoxels with the lowest mean confidence, least confident first."""
    flat = labels.ravel()
    sizes = np.bincount(flat)
    sums = np.bincount(flat, weights=confidence.ravel().astype(np.float64), minlength=sizes.size)
    present = np.flatnonzero(sizes)
    present = present[present > 0]
    means = sums[present] / sizes[present]
    order = present[np.lexsort((present, means))][:count]  # ties broken by label: deterministic
    regions = []
    for rank, label in enumerate(order, start=1):
        regions.append(AdviceRegion(rank, int(label), _inner_centre(labels, int(label)), int(sizes[label]),
                                    float(sums[label] / sizes[label])))
    return regions


def _inner_centre(labels: np.ndarray, label: int) -> tuple[int, int, int]:
    """The region's voxel closest to its centroid (the centroid of a curved region can lie outside it)."""
    points = np.argwhere(labels == label)
    centroid = points.mean(axis=0)
    return tuple(int(v) for v in points[np.argmin(((points - centroid) ** 2).sum(axis=1))])


def advice_label_map(labels: np.ndarray, regions: list[AdviceRegion]) -> np.ndarray:
    """uint8 map: the rank (1..5) of each suggested region, 0 elsewhere."""
    lookup = np.zeros(int(labels.max()) + 1, np.uint8)
    for region in regions:
        lookup[region.label] = region.rank
    return lookup[labels]
