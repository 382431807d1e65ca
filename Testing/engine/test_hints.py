"""Hint maps and the seeded simulated user."""

import numpy as np
import pytest
from mecca.clicks import Click
from mecca.hints import SUPERVOXEL_RADIUS, encode_hints, geodesic_hint_map, hint_map, supervoxel_hint_map
from mecca.users import SimulatedUser
from scipy import ndimage


def test_hint_map_is_signed_gaussian_with_peak_one():
    h = hint_map((20, 20, 20), [Click((5, 5, 5), True), Click((15, 15, 15), False)], sigma=2.0)
    assert h[5, 5, 5] == 1.0 and h[15, 15, 15] == -1.0
    assert np.isclose(h[5, 5, 7], np.exp(-4 / 8), atol=1e-6)
    assert h.min() >= -1 and h.max() <= 1
    assert h[10, 10, 10] == 0.0


def test_hint_map_accumulates_by_maximum_and_respects_offset():
    clicks = [Click((10, 10, 10), True), Click((10, 10, 11), True)]
    h = hint_map((5, 5, 5), clicks, offset=(8, 8, 8))
    assert h.max() == 1.0  # two overlapping positive clicks do not exceed 1
    assert h[2, 2, 2] == 1.0  # (10, 10, 10) - offset
    assert hint_map((5, 5, 5), [Click((40, 40, 40), True)]).max() == 0  # far outside: no effect


def test_geodesic_hint_follows_the_region_and_fades_across_an_edge():
    image = np.zeros((24, 24, 24), np.float32)
    image[:, :, 12:] = 3.0  # a step edge between columns 11 and 12
    h = geodesic_hint_map(image, [Click((12, 12, 8), True), Click((2, 2, 2), False)])
    assert h[12, 12, 8] == 1.0 and h[2, 2, 2] == -1.0
    assert h.min() >= -1 and h.max() <= 1
    # four voxels from the click on either side: the same Euclidean distance, but the path to
    # the far side crosses the edge
    assert h[12, 12, 4] > 0.1 and h[12, 12, 4] > 3 * h[12, 12, 12]
    assert np.isclose(h[12, 12, 4], np.exp(-4 / 2), atol=0.02)  # homogeneous: exp(-distance / tau)
    assert geodesic_hint_map(image, [Click((40, 40, 40), True)]).max() == 0  # outside the box: no effect


def test_a_supervoxel_hint_marks_the_clicked_region_on_its_side_of_an_edge_and_near_the_click():
    """BS-IRIS's supervoxel clicking: +1 / -1 on the SLIC cell the click falls in, nothing across
    the image's edge nor beyond the click's window."""
    image = np.zeros((30, 30, 30), np.float32)
    image[:, :, 15:] = 3.0  # a step edge between columns 14 and 15
    h = supervoxel_hint_map(image, [Click((15, 15, 12), True), Click((3, 3, 3), False)])
    assert h[15, 15, 12] == 1.0 and h[3, 3, 3] == -1.0
    assert set(np.unique(h)) == {-1.0, 0.0, 1.0}
    marked = np.argwhere(h > 0)
    assert len(marked) > 20  # a region, not a point
    assert (marked[:, 2] < 15).all()  # on the clicked side of the edge
    assert (np.abs(marked - (15, 15, 12)).max(axis=1) <= SUPERVOXEL_RADIUS).all()
    assert supervoxel_hint_map(image, [Click((15, 15, 12), True)], offset=(10, 10, 10))[5, 5, 2] == 1.0
    assert supervoxel_hint_map(image, [Click((60, 60, 60), True)]).max() == 0  # outside the box: no effect


def test_the_hint_encoding_is_chosen_by_name():
    image = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    clicks = [Click((3, 4, 5), True)]
    assert np.array_equal(encode_hints("gaussian", image, clicks), hint_map(image.shape, clicks))
    assert np.array_equal(encode_hints("geodesic", image, clicks), geodesic_hint_map(image, clicks))
    assert np.array_equal(encode_hints("supervoxel", image, clicks), supervoxel_hint_map(image, clicks))
    with pytest.raises(ValueError, match="hint encoding"):
        encode_hints("disk", image, clicks)


def _sphere(shape=(30, 30, 30), radius=8):
    k, j, i = np.indices(shape)
    return ((k - 15) ** 2 + (j - 15) ** 2 + (i - 15) ** 2) <= radius ** 2


def test_simulated_user_clicks_errors_near_the_true_surface_with_the_right_sign():
    label = _sphere()
    user = SimulatedUser(label, seed=3)
    prediction = np.zeros_like(label)  # everything missed: positive clicks on the boundary
    clicks = user.clicks(prediction, 5, round_index=0)
    assert len(clicks) == 5
    for click in clicks:
        assert click.positive and label[click.position] and user.band[click.position]
    over = _sphere(radius=11)  # too big: negative clicks just outside the true surface
    clicks = user.clicks(over, 4, round_index=1)
    assert clicks and all(not c.positive and not label[c.position] and user.band[c.position] for c in clicks)


def test_simulated_user_is_deterministic_and_spreads_clicks():
    label = _sphere()
    a = SimulatedUser(label, seed=7).clicks(np.zeros_like(label), 6, 2)
    b = SimulatedUser(label, seed=7).clicks(np.zeros_like(label), 6, 2)
    c = SimulatedUser(label, seed=8).clicks(np.zeros_like(label), 6, 2)
    assert a == b and a != c
    points = np.array([x.position for x in a])
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    assert distances[np.triu_indices(len(a), 1)].min() >= 3


def test_one_voxel_decided_otherwise_leaves_the_edge_users_other_clicks_where_they_were():
    """Precisions and processors differ in a voxel here and there; a permutation of the candidates
    would then pick a new set of clicks altogether, and the sessions go separate ways."""
    label = _sphere()
    user = SimulatedUser(label, seed=5)
    before = user.clicks(np.zeros_like(label), 4, 1)
    for click in before[:2]:  # one chosen voxel is now right: only its click moves
        prediction = np.zeros_like(label)
        prediction[click.position] = True
        after = user.clicks(prediction, 4, 1)
        assert len(set(before) & set(after)) >= 3 and click not in after


def test_simulated_user_falls_back_to_the_deepest_point_of_the_largest_error():
    label = _sphere(radius=10)
    prediction = label.copy()
    prediction[11:20, 11:20, 11:20] = False  # a hole deep inside, far from the true surface
    click = SimulatedUser(label, seed=0).clicks(prediction, 3, 0)
    assert len(click) == 1 and click[0].positive
    assert all(abs(c - 15) <= 1 for c in click[0].position)


def test_simulated_user_does_not_click_a_perfect_result():
    label = _sphere()
    assert SimulatedUser(label).clicks(label.copy(), 3, 0) == []


def test_interior_user_clicks_the_deepest_points_of_the_largest_errors_in_turn():
    label = np.zeros((40, 40, 40), bool)
    label[5:17, 5:17, 5:17] = True  # a 12-voxel cube (1728 voxels), entirely missed
    prediction = np.zeros_like(label)
    prediction[25:35, 25:35, 25:35] = True  # a 10-voxel false-positive cube (1000 voxels)
    first, second = SimulatedUser(label, style="interior").clicks(prediction, 2, 0)
    assert first.positive and all(10 <= v <= 11 for v in first.position)  # the larger cube's centre
    # its inscribed ball set aside, 823 voxels are left there: the other cube is now the largest
    assert not second.positive and all(29 <= v <= 30 for v in second.position)
    # the same clicks whatever the seed: the rule is deterministic
    assert SimulatedUser(label, seed=5, style="interior").clicks(prediction, 2, 3) == [first, second]
    # a third click: back to what is left of the first cube (823 voxels against 476), in a corner
    third = SimulatedUser(label, style="interior").clicks(prediction, 3, 0)[2]
    assert third.positive and label[third.position] and np.linalg.norm(np.subtract(third.position, first.position)) > 6


def test_random_user_clicks_errors_anywhere_and_unknown_styles_are_refused():
    label = _sphere(radius=10)
    clicks = SimulatedUser(label, seed=1, style="random").clicks(np.zeros_like(label), 40, 0)
    assert all(c.positive and label[c.position] for c in clicks)
    depth = ndimage.distance_transform_edt(label)
    assert max(depth[c.position] for c in clicks) > 3  # not only near the surface, unlike the edge user
    with pytest.raises(ValueError, match="style"):
        SimulatedUser(label, style="center")
