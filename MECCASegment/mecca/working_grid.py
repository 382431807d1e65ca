"""The grid the networks see: near-isotropic voxels, at most WORKING_MAX_VOXELS per ROI and at least
the model's own minimum (small ROIs enlarged).

Why: the networks learn on crops whose voxels are (close to) cubes and whose objects span tens
to a hundred voxels. A thick-slice scan (e.g. 0.8 x 0.8 x 5 mm CT) squashes the object along one
axis, and the bundled model loses most of its accuracy there (research/NOTEBOOK.md, "Thick slices");
a very large ROI at fine spacing costs seconds per round; a small ROI (a 40-voxel hippocampus box)
leaves the stride-2 trunk only 20 voxels across the object, too coarse for a thin structure
(research/NOTEBOOK.md, "Small ROIs"). So each round resamples the ROI's state to a working grid, runs
the policy and the confidence network there, and brings the actions and the confidence back to
the scan's own voxels, where eq. 1 is applied. ROIs that are already near-isotropic and of a
size in between are used as they are, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .clicks import Click

WORKING_MAX_VOXELS = 128**3  # a round stays under half a second on a 2-core laptop CPU (docs/performance.md)
SPACING_TOLERANCE = 1.3  # an axis whose spacing is within this ratio of the working spacing keeps its voxels
MAX_UPSAMPLING = 2.0  # small ROIs are enlarged at most this much per axis (scales the model was trained on)


@dataclass(frozen=True)
class WorkingGrid:
    """An ROI of ``native_shape`` voxels (k, j, i) seen by the networks as ``shape`` voxels."""

    native_shape: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def is_native(self) -> bool:
        return self.shape == self.native_shape

    def to_working(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) float on the native grid -> working grid (trilinear)."""
        if self.is_native:
            return volume
        return F.interpolate(volume[:, None], size=self.shape, mode="trilinear", align_corners=False)[:, 0]

    def tenths_to_working(self, tenths: torch.Tensor) -> torch.Tensor:
        """Probabilities in tenths (integer) -> working grid, still whole tenths (MECCA's state)."""
        if self.is_native:
            return tenths
        return torch.round(self.to_working(tenths.float())).to(tenths.dtype)

    def to_native(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) on the working grid -> native grid (trilinear)."""
        if self.is_native:
            return volume
        return F.interpolate(volume[:, None].float(), size=self.native_shape, mode="trilinear", align_corners=False)[:, 0]

    def argmax_to_native(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) scores on the working grid -> (B, D, H, W) index of the largest score on
        the native grid.

        Where the native grid has no more voxels than the working grid (an enlarged small ROI, a
        thick-slice ROI), the scores are interpolated trilinearly to each native voxel before the
        argmax: taking the working grid's own argmax by nearest neighbour snaps an object's edge to
        the working voxels, which cost the enlarged hippocampus ROIs 1.1 Dice points at round 5
        (research/NOTEBOOK.md, "Actions on the native grid"). A large ROI's native grid is finer than
        its working grid, and six interpolated scores per native voxel would cost seconds there
        (for no gain where measured), so its actions come by nearest neighbour.
        """
        if np.prod(self.native_shape) <= np.prod(self.shape):
            # in the scores' own dtype and (channels-last) layout: as fast as the nearest neighbour
            return F.interpolate(scores, size=self.native_shape, mode="trilinear", align_corners=False).argmax(dim=1)
        return F.interpolate(scores.argmax(dim=1, keepdim=True).float(), size=self.native_shape,
                             mode="nearest-exact")[:, 0].long()

    def clicks(self, clicks: list[Click], offset: tuple[int, int, int]) -> tuple[list[Click], tuple[int, int, int]]:
        """Clicks (whole-image indices) as working-grid indices, and the offset to give encode_hints."""
        if self.is_native:
            return clicks, offset
        scale = np.array(self.shape) / np.array(self.native_shape)
        moved = []
        for click in clicks:
            index = np.floor((np.array(click.position) - np.array(offset) + 0.5) * scale).astype(int)
            moved.append(Click(tuple(int(v) for v in index), click.positive))
        return moved, (0, 0, 0)


def working_grid(native_shape, spacing_kji, max_voxels: int | None = WORKING_MAX_VOXELS,
                 min_voxels: int | None = None) -> WorkingGrid:
    """The working grid of an ROI with ``native_shape`` voxels (k, j, i) of ``spacing_kji`` mm.

    Working spacing: the finest axis spacing; axes within SPACING_TOLERANCE of it keep their voxels.
    When that grid holds more than ``max_voxels`` (None: no limit), every axis is resampled to the
    isotropic spacing that holds exactly that many. When it holds fewer than ``min_voxels`` (the
    model's ``NetworkConfig.min_working_voxels``; None: no minimum), every axis is enlarged by the
    same factor, at most MAX_UPSAMPLING, to about that many; factors under SPACING_TOLERANCE are
    not worth a resampling and keep the grid as it is.
    """
    native = np.asarray(native_shape, dtype=int)
    spacing = np.asarray(spacing_kji, dtype=float)
    extent = native * spacing
    target = spacing.min()
    keep = spacing / target <= SPACING_TOLERANCE
    shape = np.where(keep, native, np.maximum(np.rint(extent / target), 1).astype(int))
    if max_voxels is not None and np.prod(shape.astype(float)) > max_voxels:
        target = float(np.cbrt(np.prod(extent) / max_voxels))
        shape = np.maximum(np.floor(extent / target), 1).astype(int)
    elif min_voxels is not None:
        factor = min(float(np.cbrt(min_voxels / np.prod(shape.astype(float)))), MAX_UPSAMPLING)
        if factor >= SPACING_TOLERANCE:
            shape = np.rint(shape * factor).astype(int)
    return WorkingGrid(tuple(int(v) for v in native), tuple(int(v) for v in shape))
