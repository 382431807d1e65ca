"""Transition, reward, confidence targets, simulated labels, misunderstanding rate (paper eqs. 1-6)."""

import numpy as np
import pytest
import torch
from mecca.environment import (
    ACTION_TENTHS,
    action_tenths,
    boundary_weights,
    confidence_targets,
    cross_entropy,
    normalize_image,
    shaped_reward,
    simulated_labels,
    transition,
)


def test_action_set_is_the_papers():
    assert sorted(a / 10 for a in ACTION_TENTHS) == [-0.4, -0.2, -0.1, 0.1, 0.2, 0.4]
    assert action_tenths(torch.arange(6)).tolist() == list(ACTION_TENTHS)


def test_transition_adds_and_clips_to_unit_interval():
    p = torch.tensor([5, 5, 1, 9, 0, 10], dtype=torch.uint8)
    step = torch.tensor([4, -4, -4, 4, 1, -1], dtype=torch.int16)
    assert transition(p, step).tolist() == [9, 1, 0, 10, 1, 9]
    # repeated steps stay exact (tenths): five +0.1 from 0.5 reach exactly 1.0
    q = torch.tensor([5], dtype=torch.uint8)
    for _ in range(7):
        q = transition(q, torch.tensor([1], dtype=torch.int16))
    assert q.item() == 10


def test_reward_is_positive_towards_the_label_and_negative_away():
    label = torch.tensor([1.0, 1.0, 0.0, 0.0])
    before = torch.tensor([0.5, 0.5, 0.5, 0.5])
    after = torch.tensor([0.9, 0.1, 0.1, 0.9])
    reward = shaped_reward(cross_entropy(before, label), cross_entropy(after, label), None)
    assert reward[0] > 0 and reward[2] > 0
    assert reward[1] < 0 and reward[3] < 0
    assert torch.allclose(reward[0], 0.8 * (np.log(0.9) - np.log(0.5)) * torch.ones(()), atol=1e-5)


def test_boundary_weights_are_one_on_the_labels_surface_and_fade_with_distance():
    label = np.zeros((20, 20, 20), bool)
    label[5:15, 5:15, 5:15] = True
    weights = boundary_weights(label, sigma=2.0)
    assert weights[5, 10, 10] == 1.0 and weights[14, 10, 10] == 1.0  # on the surface, inside the label
    assert np.isclose(weights[3, 10, 10], np.exp(-4 / 8)) and np.isclose(weights[8, 10, 10], np.exp(-9 / 8))
    assert np.isclose(weights[10, 10, 10], np.exp(-16 / 8)) and weights[0, 0, 0] < 1e-4  # 4 and 8.7 voxels away
    assert not boundary_weights(np.zeros((5, 5, 5), bool)).any()


def test_confidence_shaping_scales_by_two_minus_c():
    gain_before, gain_after = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5])
    confidence = torch.tensor([1.0, 0.0])
    reward = shaped_reward(gain_before, gain_after, confidence, alpha=0.8, beta=1.0)
    assert torch.allclose(reward, torch.tensor([0.8 * 1 * 0.5, 0.8 * 2 * 0.5]))
    # a wrong action (negative gain) with low confidence is punished twice as hard
    wrong = shaped_reward(gain_after, gain_before, confidence)
    assert wrong[1] == 2 * wrong[0] < 0


def test_cross_entropy_is_clamped_so_saturated_voxels_stay_finite():
    x = cross_entropy(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert torch.isfinite(x).all() and torch.allclose(x, -torch.log(torch.tensor(0.01)) * torch.ones(2))


def test_confidence_targets_and_symmetric_term():
    step = torch.tensor([4, -4, 1, -1])
    label = torch.tensor([1, 1, 0, 0])
    g = confidence_targets(step, label)
    assert g.tolist() == [1.0, 0.0, 0.0, 1.0]
    # the symmetric sample: -a agrees exactly where a does not
    assert (confidence_targets(-step, label) == 1 - g).all()


def test_simulated_labels_follow_action_flipped_by_confidence_and_mask_by_delta():
    step = torch.tensor([4, 4, -4, -4, 1])
    confidence = torch.tensor([0.95, 0.05, 0.95, 0.05, 0.6])
    label, mask = simulated_labels(step, confidence, delta=0.8)
    assert label.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert mask.tolist() == [True, True, True, True, False]


def test_misunderstanding_rate_counts_moves_against_the_label():
    from mecca.metrics import misunderstanding_rate

    label = np.array([1, 1, 0, 0, 1, 0])
    before = np.array([5, 5, 5, 5, 10, 0], np.uint8)
    after = np.array([9, 1, 1, 9, 10, 0], np.uint8)  # voxel 1 and 3 move the wrong way; 4, 5 do not move
    assert misunderstanding_rate(before, after, label) == pytest.approx(2 / 6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_normalization_is_scale_free(dtype):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, 9, 10))
    a = normalize_image((base * 10 + 100).astype(dtype))
    b = normalize_image((base * 10 + 100).astype(np.float64) * 7 - 1000)
    assert a.dtype == np.float32
    assert abs(a.mean()) < 1e-3 and abs(a.std() - 1) < 1e-2
    if np.issubdtype(dtype, np.floating):
        assert np.allclose(a, b, atol=1e-3)


def test_normalization_replaces_non_finite_voxels():
    image = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    out = normalize_image(image)
    assert np.isfinite(out).all()
    assert out[0, 0, 0] == out.min()


def test_the_oracle_step_goes_furthest_towards_the_label_without_overshooting():
    from mecca.environment import ACTION_TENTHS, oracle_actions

    p = torch.arange(11, dtype=torch.uint8)
    up = [ACTION_TENTHS[i] for i in oracle_actions(p, torch.ones(11)).tolist()]
    down = [ACTION_TENTHS[i] for i in oracle_actions(p, torch.zeros(11)).tolist()]
    assert up == [4, 4, 4, 4, 4, 4, 4, 2, 2, 1, 1]
    assert down == [-1, -1, -2, -2, -4, -4, -4, -4, -4, -4, -4]


def test_the_largest_imitation_target_is_always_the_full_step_towards_the_label():
    from mecca.environment import ACTION_TENTHS, oracle_actions

    p = torch.arange(11, dtype=torch.uint8)
    assert [ACTION_TENTHS[i] for i in oracle_actions(p, torch.ones(11), "largest").tolist()] == [4] * 11
    assert [ACTION_TENTHS[i] for i in oracle_actions(p, torch.zeros(11), "largest").tolist()] == [-4] * 11
    with pytest.raises(ValueError, match="fitting"):
        oracle_actions(p, torch.ones(11), "nearest")
