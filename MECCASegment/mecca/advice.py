"""Interaction guidance: SLIC supervoxels of the ROI ranked by the confidence of the last actions.

The supervoxels where the action-confidence network doubts the policy most are where a click
is likely to help; five are offered as "click here next" regions. How they are chosen
(RANKINGS): "mean" is the paper's (the SLIC supervoxels with the lowest mean confidence);
"doubtful_voxels" ranks the supervoxels by the expected number of wrong actions in them (the sum of
1 - confidence), which a thin strip of doubt cannot win against a large doubtful region;
"doubt_components" takes, instead of supervoxels, the connected pieces of the voxels under
DOUBT_BELOW confidence with the most doubt: regions that follow the doubt's shape (docs/results.md,
"Do the regions point at the errors?").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import slic
from skimage.transform import downscale_local_mean

ADVICE_COUNT = 5
RANKINGS = ("mean", "doubtful_voxels", "doubt_components")
DOUBT_BELOW = 0.85  # doubt_components: a voxel under this confidence is doubtful


ROUNDS_WITH_OWN_GRANULARITY = 5


def segments_for_round(round_index: int) -> int:
    """SLIC granularity: 100 supervoxels at the first round, fewer as the result settles (20 from
    round 5 on)."""
    return max(100 - 20 * round_index, 20)


SLIC_MAX_VOXELS = 64 ** 3  # larger ROIs are clustered on a block-averaged copy


@dataclass(frozen=True)
class Supervoxels:
    """SLIC labels (1..n) of a ROI with what ranking them needs that does not change from round to
    round: each label's voxel count and a voxel inside the region near its centre, both indexed by
    label. Computed once per ROI and granularity, so a round only sums the confidence per label."""

    labels: np.ndarray
    sizes: np.ndarray
    centres: np.ndarray  # (labels.max() + 1, 3) array indices; -1 for a label value not present
    _on_device: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> Supervoxels:
        return cls(labels, np.bincount(labels.ravel()), _inner_centres(labels))

    def labels_on(self, device: torch.device) -> torch.Tensor:
        """The labels as a flat int64 tensor on ``device``, copied there once per ROI: ranking then
        runs where the confidence is (on a GPU, instead of a copy back and a CPU pass each round)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.labels.astype(np.int64, copy=False).ravel()).to(device)
        return self._on_device[key]


def _inner_centres(labels: np.ndarray) -> np.ndarray:
    """Per label, its voxel closest to the region's centroid (the centroid of a curved region can
    lie outside it)."""
    present = np.unique(labels)
    centroids = np.zeros((int(labels.max()) + 1, 3))
    centroids[present] = ndimage.center_of_mass(np.ones(labels.shape, np.float32), labels, present)
    offsets = np.indices(labels.shape, np.float32) - np.moveaxis(centroids[labels], -1, 0)
    centres = np.full((centroids.shape[0], 3), -1, np.int64)
    centres[present] = ndimage.minimum_position(np.einsum("a...,a...->...", offsets, offsets), labels, present)
    return centres


def supervoxels(image_norm: np.ndarray, n_segments: int, spacing=(1.0, 1.0, 1.0)) -> Supervoxels:
    """SLIC supervoxels of a normalised ROI, with the paper's settings.

    ``spacing`` (mm, array axis order) makes the regions compact in millimetres rather than in
    voxels: the paper's spatial weight 2 applies to the finest axis and coarser axes weigh more, so
    on 5 mm slices a region spans a few slices instead of a needle through all of them.
    A hundred supervoxels need no full-resolution clustering: ROIs above SLIC_MAX_VOXELS are
    block-averaged first and the labels repeated back (a 128^3 ROI: 0.3 s instead of 3-5 s); the
    region centres are found on the small grid and moved to the middle of their block, which has
    the same label throughout.
    """
    factor = max(1, int(np.ceil((image_norm.size / SLIC_MAX_VOXELS) ** (1 / 3))))
    small = downscale_local_mean(image_norm, (factor,) * 3) if factor > 1 else image_norm
    spacing = np.asarray(spacing, np.float64)
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"spacing must be three positive numbers, got {spacing.tolist()}")
    labels = slic(small, n_segments=n_segments, compactness=0.1, spacing=2.0 * spacing / spacing.min(),
                  channel_axis=None, start_label=1, enforce_connectivity=True)
    regions = Supervoxels.from_labels(labels)
    if factor == 1:
        return regions
    full = labels.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    full = np.ascontiguousarray(full[tuple(slice(0, n) for n in image_norm.shape)])
    centres = np.where(regions.centres >= 0,
                       np.minimum(regions.centres * factor + factor // 2, np.array(image_norm.shape) - 1), -1)
    return Supervoxels(full, np.bincount(full.ravel()), centres)


@dataclass(frozen=True)
class AdviceRegion:
    """One suggested region: its rank (1 = first to look at), a voxel inside it near its centre
    (array index within the ROI), its size, its mean action confidence and its expected number of
    wrong actions (the sum of 1 - confidence, in voxels)."""

    rank: int
    label: int
    centre: tuple[int, int, int]
    voxel_count: int
    mean_confidence: float
    doubtful_voxels: float


def rank_regions(regions: Supervoxels, confidence: np.ndarray | torch.Tensor, count: int = ADVICE_COUNT,
                 ranking: str = "mean") -> list[AdviceRegion]:
    """The ``count`` supervoxels to look at first under ``ranking`` (RANKINGS): the lowest mean
    confidence, or the most doubtful voxels (the largest sum of 1 - confidence). The per-label
    sums (a scatter-add) run on the confidence's device; only they come back."""
    if ranking not in RANKINGS:
        raise ValueError(f"the advice ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    # doubt_components: ``regions`` are doubt_pieces, ranked by their doubt as supervoxels would be
    sizes = regions.sizes
    confidence = torch.as_tensor(confidence)
    sums = torch.bincount(regions.labels_on(confidence.device), weights=confidence.reshape(-1).double(),
                          minlength=sizes.size).cpu().numpy()
    present = np.flatnonzero(sizes)
    present = present[present > 0]
    doubtful = sizes - sums
    key = sums[present] / sizes[present] if ranking == "mean" else -doubtful[present]
    order = present[np.lexsort((present, key))][:count]  # ties broken by label: deterministic
    return [AdviceRegion(rank, int(label), tuple(int(v) for v in regions.centres[label]), int(sizes[label]),
                         float(sums[label] / sizes[label]), float(doubtful[label]))
            for rank, label in enumerate(order, start=1)]


def doubt_pieces(confidence: np.ndarray | torch.Tensor, doubt_below: float = DOUBT_BELOW,
                 count: int = ADVICE_COUNT) -> Supervoxels:
    """The ``count`` connected pieces of the voxels under ``doubt_below`` confidence with the most
    doubt (sum of 1 - confidence), labelled 1..count, as regions to rank (label 0: the rest, never
    offered), for ranking="doubt_components". A piece's centre is its most doubtful voxel (inside
    it by construction). Past the labelling, only the doubtful voxels are visited (a few per cent
    of the ROI), so a round stays within its time budget."""
    confidence = torch.as_tensor(confidence).float().cpu().numpy()
    pieces, found = ndimage.label(confidence < doubt_below)
    doubtful = np.flatnonzero(pieces)
    piece_of, doubt_of = pieces.ravel()[doubtful], 1.0 - confidence.ravel()[doubtful].astype(np.float64)
    kept = np.argsort(-np.bincount(piece_of, weights=doubt_of, minlength=found + 1)[1:], kind="stable")[:count] + 1
    lookup = np.zeros(found + 1, np.int32)
    lookup[kept] = np.arange(1, kept.size + 1)
    piece_of = lookup[piece_of]
    labels = np.zeros(confidence.shape, np.int32)
    labels.ravel()[doubtful] = piece_of
    centres = np.full((kept.size + 1, 3), -1, np.int64)
    for label in range(1, kept.size + 1):
        members = np.flatnonzero(piece_of == label)
        centres[label] = np.unravel_index(doubtful[members[np.argmax(doubt_of[members])]], confidence.shape)
    sizes = np.bincount(piece_of, minlength=kept.size + 1)
    sizes[0] = confidence.size - sizes[1:].sum()
    return Supervoxels(labels, sizes, centres)


def advice_label_map(regions: Supervoxels, advice: list[AdviceRegion], device: torch.device | str = "cpu") -> np.ndarray:
    """uint8 map of the ROI: the rank (1..5) of each suggested region, 0 elsewhere (looked up on
    ``device``, where the labels already are)."""
    lookup = torch.zeros(regions.sizes.size, dtype=torch.uint8, device=device)
    for region in advice:
        lookup[region.label] = region.rank
    return lookup[regions.labels_on(torch.device(device))].cpu().numpy().reshape(regions.labels.shape)
