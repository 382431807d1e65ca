"""The per-voxel MDP of MECCA: state, transition (paper eq. 1), reward (eqs. 4-5, and BS-IRIS's
boundary weights for that baseline), confidence targets (eq. 3), simulated labels (eq. 6) and the
oracle step of the imitation warm start.

Probabilities are kept in tenths as small integers (0..10). Every action is a multiple of 0.1
and p starts at 0.5 or 0.5 +/- 0.4, so this is exact: no drift from repeated float additions,
``p > 0.5`` is ``tenths > 5``, and a whole-volume probability fits in one byte per voxel.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

ACTION_TENTHS = (-4, -2, -1, 1, 2, 4)  # A = {-0.4, -0.2, -0.1, +0.1, +0.2, +0.4}
NUM_ACTIONS = len(ACTION_TENTHS)
START_TENTHS = 5  # p = 0.5 in a fresh session
MASK_TENTHS = (1, 9)  # p = 0.5 -/+ 0.4 when starting from an existing segment
CE_EPS = 1e-2  # p clamp in the cross-entropy: keeps one wrong saturated voxel from dominating the reward


def action_tenths(action_index: torch.Tensor) -> torch.Tensor:
    """Index into A -> signed step in tenths (int)."""
    table = torch.tensor(ACTION_TENTHS, dtype=torch.int16, device=action_index.device)
    return table[action_index]


IMITATION_TARGETS = ("fitting", "largest")


def oracle_actions(p_tenths: torch.Tensor, label: torch.Tensor, target: str = "fitting") -> torch.Tensor:
    """Index into A of the target step of the imitation term, towards each voxel's label.

    ``fitting``: the step that moves p furthest without overshooting (the largest of 0.4, 0.2, 0.1
    that fits; 0.1 where p is already there). ``largest``: 0.4 always, the target the bundled
    model's stages were trained with; continuing it at 1e-4 towards ``fitting`` steps cost it its
    first round, towards ``largest`` steps not, while at the fine-tuning rate (2e-5) ``fitting``
    ended higher (research/NOTEBOOK.md, "Imitation targets")."""
    if target not in IMITATION_TARGETS:
        raise ValueError(f"imitation target must be one of {IMITATION_TARGETS}, got {target!r}")
    remaining = torch.where(label > 0, 10 - p_tenths.to(torch.int16), p_tenths.to(torch.int16))
    if target == "largest":
        remaining = torch.full_like(remaining, 4)
    size = torch.where(remaining >= 4, 2, torch.where(remaining >= 2, 1, 0))  # 0: 0.1, 1: 0.2, 2: 0.4
    half = NUM_ACTIONS // 2  # A lists the three down steps (largest first), then the three up steps
    return torch.where(label > 0, half + size, half - 1 - size).long()


def transition(p_tenths: torch.Tensor, step_tenths: torch.Tensor) -> torch.Tensor:
    """Eq. 1: p <- clip(p + a, 0, 1), in tenths."""
    return (p_tenths.to(torch.int16) + step_tenths.to(torch.int16)).clamp_(0, 10).to(p_tenths.dtype)


def cross_entropy(probability: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. 5's X: per-voxel binary cross-entropy with p clamped to [eps, 1 - eps]."""
    p = probability.clamp(CE_EPS, 1.0 - CE_EPS)
    y = label.to(p.dtype)
    return -(y * torch.log(p) + (1.0 - y) * torch.log(1.0 - p))


def confidence_targets(step: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. 3: g = 1 where the action's direction agrees with the label, else 0 (float)."""
    agree = ((step > 0) & (label > 0)) | ((step < 0) & (label <= 0))
    return agree.float()


def shaped_reward(ce_before: torch.Tensor, ce_after: torch.Tensor, confidence: torch.Tensor | None,
                  alpha: float = 0.8, beta: float = 1.0) -> torch.Tensor:
    """Eqs. 4-5 per voxel: alpha (2 - c)^beta (X(t-1) - X(t)).

    ``confidence=None`` gives the IteR-MRL ablation (c = 1). c must already be detached.
    """
    gain = ce_before - ce_after
    if confidence is None:
        return alpha * gain
    return alpha * (2.0 - confidence) ** beta * gain


BOUNDARY_SIGMA = 2.0  # voxels: how far from the label's surface BS-IRIS's boundary reward reaches


def boundary_weights(label: np.ndarray, sigma: float = BOUNDARY_SIGMA) -> np.ndarray:
    """exp(-d^2 / 2 sigma^2) per voxel, d its distance to the label's surface (voxels; 0 without a
    surface): the weight of BS-IRIS's boundary reward, which counts a voxel's gain (1 + lambda w)
    times so that the surface, where a segmentation is judged, matters more. The paper gives the
    idea (a relative weight by the distance to the true boundary) without its form; this is ours."""
    label = label.astype(bool)
    surface = label ^ ndimage.binary_erosion(label)
    if not surface.any():
        return np.zeros(label.shape, np.float32)
    distance = ndimage.distance_transform_edt(~surface)
    return np.exp(-distance ** 2 / (2 * sigma * sigma)).astype(np.float32)


def simulated_labels(step: torch.Tensor, confidence: torch.Tensor, delta: float = 0.8):
    """Eq. 6 for an unlabelled case: the action's direction, flipped where C says it is wrong.

    Returns (label, mask): mask keeps only voxels whose confidence is beyond the threshold
    (|c - 0.5| > delta - 0.5), the only voxels that may contribute reward and gradient.
    """
    label = ((step > 0) & (confidence > 0.5)) | ((step < 0) & (confidence <= 0.5))
    mask = (confidence - 0.5).abs() > (delta - 0.5)
    return label.float(), mask


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Modality-independent intensity normalisation: clip to the 0.5-99.5 percentiles, z-score.

    Computed on the array given (the ROI), so CT in HU, MRI in arbitrary units and integer or
    float storage all arrive at the network on the same scale. NaN and infinite voxels (some
    scanners mark missing data so) take the lowest finite value of the ROI.
    """
    values = image.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, values[finite].min() if finite.any() else 0.0).astype(np.float32)
    if values.size > 2_000_000:  # percentiles of a subsample: same result to a few digits, much faster
        sample = values.ravel()[:: values.size // 1_000_000]
    else:
        sample = values.ravel()
    low, high = np.percentile(sample, (0.5, 99.5))
    clipped = np.clip(values, low, high)
    mean = float(clipped.mean(dtype=np.float64))
    std = float(clipped.std(dtype=np.float64))
    return ((clipped - mean) / max(std, 1e-6)).astype(np.float32)


def build_state(image_norm: torch.Tensor, probability: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """Stack (image, probability, hint) as the 3-channel state, each (B, D, H, W) -> (B, 3, D, H, W).

    Integer probabilities are tenths (MECCA's exact state); float ones are used as they are.
    """
    if not probability.is_floating_point():
        probability = probability.float() / 10.0
    return torch.stack([image_norm, probability, hint], dim=1)
