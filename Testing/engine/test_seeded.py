"""Seeds from clicks (balls of 2 voxels, a background shell on the ROI's border) and the random walker."""

import numpy as np
from mecca.clicks import Click
from mecca.seeded import BACKGROUND, FOREGROUND, random_walker_probability, seed_map


def test_clicks_become_balls_of_radius_two_inside_a_background_shell():
    seeds = seed_map((20, 20, 20), [Click((12, 12, 12), True), Click((13, 12, 12), False), Click((50, 5, 5), True)],
                     offset=(2, 2, 2))
    shell = np.ones((20, 20, 20), bool)
    shell[1:-1, 1:-1, 1:-1] = False
    assert (seeds[shell] == BACKGROUND).all()
    k, j, i = np.indices(seeds.shape)
    negative = (k - 11) ** 2 + (j - 10) ** 2 + (i - 10) ** 2 <= 4  # the later click paints over the earlier
    positive = ((k - 10) ** 2 + (j - 10) ** 2 + (i - 10) ** 2 <= 4) & ~negative
    assert (seeds[negative] == BACKGROUND).all() and (seeds[positive] == FOREGROUND).all()
    assert np.count_nonzero(seeds == FOREGROUND) == np.count_nonzero(positive)  # the click outside the box: none
    assert np.count_nonzero(negative) == 33  # a ball of radius 2


def test_the_random_walker_finds_a_bright_blob_from_one_click():
    rng = np.random.default_rng(0)
    k, j, i = np.indices((30, 30, 30))
    blob = (k - 15) ** 2 + (j - 15) ** 2 + (i - 13) ** 2 <= 36
    image = (blob * 3.0 + rng.normal(0, 0.3, blob.shape)).astype(np.float32)
    probability = random_walker_probability(image, seed_map(blob.shape, [Click((15, 15, 13), True)]))
    mask = probability > 0.5
    assert 2 * np.count_nonzero(mask & blob) / (mask.sum() + blob.sum()) > 0.95
    assert not random_walker_probability(image, seed_map(blob.shape, [Click((15, 15, 13), False)])).any()
