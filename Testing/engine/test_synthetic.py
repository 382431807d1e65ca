"""Class-agnostic training objects drawn from a real scan (the bundled sample), and thick slices."""

import numpy as np
import pytest
from mecca import synthetic
from mecca.environment import normalize_image


@pytest.fixture(scope="module")
def sample():
    from mecca.io import read_volume
    from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path

    return normalize_image(read_volume(resource_path(*SAMPLE_IMAGE)).array), \
        read_volume(resource_path(*SAMPLE_LABEL)).array > 0


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_each_kind_draws_a_connected_object_of_its_own_rule(sample, kind):
    from scipy import ndimage

    image, label = sample
    rng = np.random.default_rng(3)
    masks = [m for m in (synthetic._DRAW[kind](image, label, rng) for _ in range(12)) if m is not None]
    assert len(masks) >= 6, "most draws give an object"
    for mask in masks:
        assert mask.shape == image.shape and mask.dtype == bool and mask.any()
        if kind != "reshaped":  # a grown label may be one piece or several; the others are one piece
            assert ndimage.label(mask)[1] == 1 or kind == "supervoxels"
        if kind == "part":
            assert not (mask & ~label).any() and mask.sum() < label.sum()
        if kind == "reshaped":
            assert (mask >= label).all() or not (mask & ~label).any()  # grown around it, or inside it
        if kind in ("supervoxels", "threshold"):
            points = np.argwhere(mask)
            box = np.prod(points.max(0) - points.min(0) + 1)
            assert mask.sum() <= box and mask.sum() < label.size * synthetic.MAX_FILL
    if kind == "threshold":  # regions of similar intensity: less spread inside than the image
        assert np.mean([image[m].std() for m in masks]) < image.std()


def test_synthetic_objects_are_large_enough_and_repeat_with_the_seed(sample):
    image, label = sample
    first = [synthetic.synthetic_object(image, label, np.random.default_rng(s)) for s in range(8)]
    again = [synthetic.synthetic_object(image, label, np.random.default_rng(s)) for s in range(8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(m.sum() >= synthetic.MIN_VOXELS for m in first)
    assert sum(not np.array_equal(m, label) for m in first) >= 6  # mostly objects other than the label


def test_thick_slices_average_slabs_along_one_axis_and_leave_padding_at_zero(sample):
    image, _ = sample
    valid = np.ones(image.shape, bool)
    valid[:, :, -3:] = False
    padded = np.where(valid, image, 0.0).astype(np.float32)
    thick = synthetic.thick_slices(padded, valid, np.random.default_rng(0))
    assert thick.shape == image.shape and not thick[~valid].any()
    assert not np.allclose(thick, padded) and np.corrcoef(thick[valid], padded[valid])[0, 1] > 0.8
    # an image constant along the drawn axis is unchanged: averaging equal slices gives the same slices
    seed = next(s for s in range(20) if np.random.default_rng(s).integers(3) == 0)  # a draw of axis 0 (k)
    constant_along_k = np.broadcast_to(padded[:1], padded.shape).copy()
    out = synthetic.thick_slices(constant_along_k, valid, np.random.default_rng(seed))
    assert np.allclose(out[valid], constant_along_k[valid], atol=1e-5)


def test_synthetic_objects_keep_to_the_kinds_asked_for(sample):
    image, label = sample
    made = [synthetic.synthetic_object(image, label, np.random.default_rng(s), ("part",)) for s in range(6)]
    assert all(not (m & ~label).any() and m.sum() < label.sum() for m in made)  # pieces of the label only
    for kinds in ((), ("organ",)):
        with pytest.raises(ValueError, match="kinds"):
            synthetic.synthetic_object(image, label, np.random.default_rng(0), kinds)
