"""SLIC advice regions: ranked by mean confidence, least confident first, or by doubtful voxels."""

import numpy as np
import pytest
import torch
from mecca.advice import SLIC_MAX_VOXELS, Supervoxels, advice_label_map, rank_regions, segments_for_round, supervoxels
from mecca.environment import normalize_image
from mecca.io import read_volume
from mecca.resources import SAMPLE_IMAGE, resource_path
from mecca.volume import resample_to_shape


def test_ranking_picks_the_least_confident_regions_in_order():
    labels = np.repeat(np.arange(1, 9), 10).reshape(8, 10, 1)
    confidence = np.ones(labels.shape, np.float32)
    for label, value in {3: 0.1, 6: 0.2, 1: 0.3, 8: 0.4, 2: 0.5, 4: 0.6}.items():
        confidence[labels == label] = value
    supervoxel_map = Supervoxels.from_labels(labels)
    regions = rank_regions(supervoxel_map, confidence, count=5)
    assert [r.label for r in regions] == [3, 6, 1, 8, 2]
    assert [r.rank for r in regions] == [1, 2, 3, 4, 5]
    assert regions[0].voxel_count == 10 and np.isclose(regions[0].mean_confidence, 0.1)
    for region in regions:
        assert labels[region.centre] == region.label  # the suggested voxel lies inside its region
    ranks = advice_label_map(supervoxel_map, regions)
    assert set(np.unique(ranks)) == {0, 1, 2, 3, 4, 5}
    assert (ranks[labels == 3] == 1).all() and (ranks[labels == 4] == 0).all()


def test_ranking_by_doubtful_voxels_prefers_a_large_doubt_to_a_thin_strip():
    """A 4-voxel strip at confidence 0.1 (3.6 expected wrong actions) comes first by its mean; a
    40-voxel region at 0.6 (16 expected wrong actions) comes first by doubtful voxels."""
    labels = np.concatenate([np.full(4, 1), np.full(40, 2), np.full(56, 3)]).reshape(100, 1, 1)
    confidence = np.select([labels == 1, labels == 2], [0.1, 0.6], 0.95).astype(np.float32)
    regions = Supervoxels.from_labels(labels)
    assert [r.label for r in rank_regions(regions, confidence, 2)] == [1, 2]
    by_doubt = rank_regions(regions, confidence, 2, ranking="doubtful_voxels")
    assert [r.label for r in by_doubt] == [2, 1] and by_doubt[0].doubtful_voxels == pytest.approx(16, abs=1e-4)
    with pytest.raises(ValueError, match="ranking"):
        rank_regions(regions, confidence, 2, ranking="largest")


def test_doubt_components_are_the_doubtful_pieces_with_the_most_doubt():
    """Three separate doubtful pieces (confidence under 0.85) and a confident rest: the pieces are the
    regions, the one with the most doubt first, and no region reaches into the confident voxels."""
    from mecca.advice import doubt_pieces

    confidence = np.full((12, 12, 12), 0.99, np.float32)
    confidence[1:3, 1:3, 1:3] = 0.1  # 8 voxels, doubt 7.2
    confidence[6:10, 6:10, 6:9] = 0.7  # 48 voxels, doubt 14.4
    confidence[1:2, 9:11, 9:11] = 0.8  # 4 voxels, doubt 0.8
    pieces = doubt_pieces(confidence)
    regions = rank_regions(pieces, confidence, 5, ranking="doubt_components")
    assert [r.voxel_count for r in regions] == [48, 8, 4]
    ranks = advice_label_map(pieces, regions)
    assert np.array_equal(ranks > 0, confidence < 0.85) and (ranks[7, 7, 7], ranks[1, 1, 1]) == (1, 2)


def test_supervoxels_cover_the_roi_and_shrink_in_number_with_rounds():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 24, 24)).astype(np.float32)
    image[6:18, 6:18, 6:18] += 4
    labels = supervoxels(image, segments_for_round(0)).labels
    assert labels.shape == image.shape and labels.min() >= 1
    assert 20 <= len(np.unique(labels)) <= 200
    assert segments_for_round(0) == 100 and segments_for_round(4) < segments_for_round(1) and segments_for_round(10) == 20


def _median_extent_mm(labels: np.ndarray, spacing) -> np.ndarray:
    extents = []
    for label in np.unique(labels[labels > 0]):
        points = np.argwhere(labels == label)
        extents.append((points.max(axis=0) - points.min(axis=0) + 1) * np.asarray(spacing))
    return np.median(extents, axis=0)


def test_supervoxels_are_compact_in_millimetres_on_thick_slices():
    image = np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    spacing = (4.0, 1.0, 1.0)  # 4 mm slices, 1 mm in plane
    in_voxels = _median_extent_mm(supervoxels(image, 100).labels, spacing)
    in_mm = _median_extent_mm(supervoxels(image, 100, spacing).labels, spacing)
    assert in_voxels[0] > 2.5 * in_voxels[1]  # voxel-compact regions are needles along the slices
    assert in_mm[0] < 1.5 * in_mm[1] and in_mm[0] < in_voxels[0] / 1.5


def test_large_roi_regions_have_full_resolution_sizes_and_centres_inside_them():
    """A ROI above SLIC_MAX_VOXELS is clustered on a block-averaged copy; the sizes and centres kept
    for the rounds must still be those of the full-resolution labels."""
    sample = read_volume(resource_path(*SAMPLE_IMAGE))
    roi = resample_to_shape(sample, tuple(2 * n for n in sample.shape))  # the real scan at twice its size
    assert roi.array.size > SLIC_MAX_VOXELS
    regions = supervoxels(normalize_image(roi.array), 100, roi.spacing_kji)
    labels = regions.labels
    np.testing.assert_array_equal(regions.sizes, np.bincount(labels.ravel()))
    exact = Supervoxels.from_labels(labels).centres  # the search at full resolution
    for label in np.flatnonzero(regions.sizes)[1:]:
        assert labels[tuple(regions.centres[label])] == label
        centroid = np.argwhere(labels == label).mean(axis=0)
        block_distance = np.linalg.norm(regions.centres[label] - centroid)
        assert block_distance <= np.linalg.norm(exact[label] - centroid) + 2 * np.sqrt(3)


def test_supervoxels_refuse_a_bad_spacing():
    with pytest.raises(ValueError, match="spacing"):
        supervoxels(np.zeros((8, 8, 8), np.float32), 10, (1.0, 0.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the device ranking is checked where one is")
def test_ranking_on_the_gpu_gives_the_cpu_ranking():
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 60, (20, 30, 40))
    confidence = rng.random(labels.shape).astype(np.float32)
    regions = Supervoxels.from_labels(labels)
    on_cpu = rank_regions(regions, confidence)
    on_gpu = rank_regions(regions, torch.from_numpy(confidence).cuda())
    assert [r.label for r in on_gpu] == [r.label for r in on_cpu]
    assert np.array_equal(advice_label_map(regions, on_gpu, "cuda"), advice_label_map(regions, on_cpu))
