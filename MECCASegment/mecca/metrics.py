"""Segmentation metrics of the evaluation (paper section 5): Dice, ASSD, the interactive-
misunderstanding rate (Definition 1) and ROC AUC."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata


def dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, ref = prediction > 0, label > 0
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 1.0 if total == 0 else float(2.0 * np.count_nonzero(pred & ref) / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def assd(prediction: np.ndarray, label: np.ndarray, spacing_kji=(1.0, 1.0, 1.0)) -> float:
    """Average symmetric surface distance (in the units of ``spacing``, numpy axis order).

    inf when exactly one of the masks is empty, 0 when both are.
    """
    pred, ref = prediction > 0, label > 0
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("inf")
    pred_surface, ref_surface = _surface(pred), _surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_kji)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_kji)
    distances = np.concatenate([to_ref[pred_surface], to_pred[ref_surface]])
    return float(distances.mean())


def misunderstanding_rate(p_before: np.ndarray, p_after: np.ndarray, label: np.ndarray) -> float:
    """Definition 1: fraction of voxels whose probability moved against their label in a round."""
    delta = p_after.astype(np.float32) - p_before.astype(np.float32)
    fg = label > 0
    against = np.count_nonzero((delta > 0) & ~fg) + np.count_nonzero((delta < 0) & fg)
    return against / max(label.size, 1)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for telling the ``positive`` items from the others (Mann-Whitney U
    from ranks, ties averaged); nan when either class is empty."""
    positive = np.asarray(positive, bool)
    positives = int(positive.sum())
    negatives = positive.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
