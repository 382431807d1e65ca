"""Evaluation metrics against hand-computed cases."""

import numpy as np
import pytest
from mecca.geometry import label_box
from mecca.metrics import assd, dice


def test_dice_hand_computed():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0, 0, :3] = True  # 3 voxels
    b[0, 0, 1:] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_assd_of_two_parallel_planes_uses_the_spacing_of_the_axis():
    # two one-voxel-thick slabs 3 voxels apart along axis 0; spacing 2.5 mm along that axis
    a = np.zeros((10, 6, 6), bool)
    b = np.zeros((10, 6, 6), bool)
    a[2] = True
    b[5] = True
    assert assd(a, b, (2.5, 0.7, 0.7)) == pytest.approx(3 * 2.5)
    assert assd(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert assd(a, a, (2.5, 0.7, 0.7)) == 0.0


def test_assd_is_symmetric_and_averages_both_directions():
    a = np.zeros((1, 1, 20), bool)
    b = np.zeros((1, 1, 20), bool)
    a[0, 0, 5] = True
    b[0, 0, 5] = True
    b[0, 0, 9] = True  # b has an extra surface voxel 4 mm away from a's only voxel
    # distances: a->b: [0]; b->a: [0, 4 * 0.5]; mean over the three = 2/3 * 0.5 * 2
    expected = (0 + 0 + 4 * 0.5) / 3
    assert assd(a, b, (1.0, 1.0, 0.5)) == pytest.approx(expected)
    assert assd(b, a, (1.0, 1.0, 0.5)) == pytest.approx(expected)


def test_assd_with_an_empty_mask():
    a = np.zeros((3, 3, 3), bool)
    b = a.copy()
    b[1, 1, 1] = True
    assert assd(a, b) == float("inf") and assd(a, a) == 0.0


def test_label_box_adds_margin_and_clips():
    label = np.zeros((10, 20, 30), np.uint8)
    label[2:5, 6:9, 10:12] = 1
    lo, hi = label_box(label, margin=3)
    assert lo == (7, 3, 0) and hi == (15, 12, 8)  # (i, j, k), k clipped at 0


def test_simulated_label_quality_hand_computed():
    """Four voxels moved, one did not; eq. 6 keeps the three whose confidence is beyond 0.8 / 0.2."""
    from mecca.harness import simulated_label_quality
    from mecca.session import Round

    before = np.full((1, 1, 5), 5, np.uint8)
    after = np.array([[[7, 3, 9, 1, 5]]], np.uint8)          # up, down, up, down, unchanged
    confidence = np.array([[[0.9, 0.1, 0.95, 0.6, 0.99]]], np.float32)
    label = np.array([[[1, 1, 0, 0, 1]]], np.uint8)
    # simulated labels: up & sure -> 1 (right); down & doubted -> 1 (right); up & sure -> 1 (wrong);
    # the fourth is not confident enough, the fifth did not move
    coverage, accuracy, recall = simulated_label_quality(Round(1, [], ((0, 0, 0), (5, 1, 1)), before, after, confidence), label)
    assert coverage == pytest.approx(3 / 4)
    assert accuracy == pytest.approx(2 / 3)
    assert recall == 1.0  # both true-foreground voxels used are labelled foreground


def test_simulated_labels_that_are_all_background_have_no_foreground_recall():
    """Accurate on a small object, useless for it: what the bundled confidence network gives."""
    from mecca.harness import simulated_label_quality
    from mecca.session import Round

    before = np.full((1, 1, 10), 5, np.uint8)
    after = np.full((1, 1, 10), 1, np.uint8)  # every voxel stepped down ...
    confidence = np.full((1, 1, 10), 0.9, np.float32)  # ... and C is sure that was right
    label = np.zeros((1, 1, 10), np.uint8)
    label[0, 0, 0] = 1
    coverage, accuracy, recall = simulated_label_quality(Round(1, [], ((0, 0, 0), (10, 1, 1)), before, after, confidence), label)
    assert (coverage, accuracy, recall) == (1.0, pytest.approx(0.9), 0.0)


def test_confidence_auc_hand_computed():
    """Right steps ranked above wrong ones -> 1; the reverse -> 0; one tie between them -> 0.5 for that pair."""
    from mecca.harness import confidence_auc
    from mecca.session import Round

    before = np.full((1, 1, 5), 5, np.uint8)
    after = np.array([[[7, 3, 9, 1, 5]]], np.uint8)  # up, down, up, down, unchanged
    label = np.array([[[1, 0, 0, 1, 1]]], np.uint8)  # right, right, wrong, wrong, (not moved)

    def auc(confidence):
        return confidence_auc(Round(1, [], ((0, 0, 0), (5, 1, 1)), before, after, np.array([[confidence]], np.float32)), label)

    assert auc([0.9, 0.8, 0.1, 0.2, 0.0]) == 1.0
    assert auc([0.1, 0.2, 0.9, 0.8, 1.0]) == 0.0
    assert auc([0.9, 0.5, 0.5, 0.1, 0.0]) == pytest.approx(3.5 / 4)


def test_roc_auc_counts_pairs_ranked_right_and_half_the_ties():
    from mecca.metrics import roc_auc

    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 0.0
    assert roc_auc(np.array([0.9, 0.2, 0.5, 0.1]), positive) == 0.75  # 3 of 4 (positive, negative) pairs in order
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))
