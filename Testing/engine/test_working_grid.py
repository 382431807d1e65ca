"""The working grid: thick-slice and very large ROIs reach the networks as near-isotropic voxels of
bounded number, and the actions come back to the scan's own voxels."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch
from mecca import session as session_module
from mecca.cases import load_cases
from mecca.clicks import Click
from mecca.environment import ACTION_TENTHS
from mecca.geometry import label_box
from mecca.harness import simulate_mecca
from mecca.io import read_volume, write_volume
from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
from mecca.session import InteractiveSession
from mecca.volume import Volume, resample_to_shape
from mecca.working_grid import WORKING_MAX_VOXELS, WorkingGrid, working_grid


def test_isotropic_small_roi_is_used_as_it_is():
    grid = working_grid((40, 50, 36), (1.0, 1.0, 1.0))
    assert grid.is_native
    volume = torch.rand(1, 40, 50, 36)
    assert grid.to_working(volume) is volume and grid.to_native(volume) is volume


def test_thick_slices_become_near_isotropic_only_along_the_thick_axis():
    grid = working_grid((12, 80, 80), (5.0, 0.8, 0.8))  # (k, j, i): 5 mm slices
    assert grid.shape == (75, 80, 80)  # 60 mm at 0.8 mm


def test_a_huge_roi_is_capped():
    grid = working_grid((300, 300, 300), (1.0, 1.0, 1.0))
    assert np.prod(grid.shape) <= WORKING_MAX_VOXELS * 1.01
    assert max(grid.shape) - min(grid.shape) <= 1  # stays isotropic
    assert working_grid((300, 300, 300), (1.0, 1.0, 1.0), max_voxels=None).is_native


def test_a_small_roi_is_enlarged_to_the_models_minimum_at_most_twice():
    assert working_grid((40, 40, 40), (1.0, 1.0, 1.0), min_voxels=64**3).shape == (64, 64, 64)
    assert working_grid((20, 30, 10), (1.0, 1.0, 1.0), min_voxels=64**3).shape == (40, 60, 20)  # capped at 2x
    assert working_grid((60, 60, 60), (1.0, 1.0, 1.0), min_voxels=64**3).is_native  # 1.07x: not worth resampling
    assert working_grid((64, 64, 64), (1.0, 1.0, 1.0), min_voxels=64**3).is_native  # mecca bench's ROIs: as before
    assert working_grid((40, 40, 40), (1.0, 1.0, 1.0)).is_native  # no minimum
    # thick slices first become near-isotropic, then the whole grid is enlarged
    assert working_grid((8, 40, 40), (5.0, 1.0, 1.0), min_voxels=64**3).shape == (64, 64, 64)


def test_session_enlarges_a_small_roi_only_for_a_model_trained_so(untrained_model):
    image = Volume(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
    sizes = []
    for minimum in (None, 64**3):
        untrained_model.config = replace(untrained_model.config, min_working_voxels=minimum)
        session = InteractiveSession(image, untrained_model, roi=((0, 0, 0), (40, 40, 40)))
        session.add_click((20, 20, 20), True)
        sizes.append(session.step()["working_size_ijk"])
        assert session.probability.shape == (40, 40, 40) and session.confidence_map().shape == (40, 40, 40)
    assert sizes == [[40, 40, 40], [64, 64, 64]]


def test_clicks_land_on_the_same_physical_point():
    grid = WorkingGrid(native_shape=(10, 20, 20), shape=(40, 20, 20))  # 4 mm slices -> 1 mm
    offset = (5, 7, 9)
    clicks, new_offset = grid.clicks([Click((8, 10, 12), True), Click((5, 7, 9), False)], offset)
    assert new_offset == (0, 0, 0)
    # native slice 3 of the ROI covers working slices 12-15; its centre is at 13.5 -> 14
    assert clicks[0] == Click((14, 3, 3), True) and clicks[1] == Click((2, 0, 0), False)


def test_tenths_stay_whole_tenths_on_the_working_grid():
    grid = WorkingGrid(native_shape=(6, 8, 8), shape=(18, 8, 8))
    tenths = torch.randint(0, 11, (1, 6, 8, 8), dtype=torch.uint8)
    working = grid.tenths_to_working(tenths)
    assert working.dtype == torch.uint8 and working.shape == (1, 18, 8, 8)
    assert torch.equal(working[:, 1::3], tenths)  # each native slice's centre keeps its value


def _ramp_scores(shape: tuple[int, int, int], edge: float) -> torch.Tensor:
    """Two-class scores on a grid spanning [0, 1] along i: class 1 wins where x > edge."""
    x = (torch.arange(shape[2], dtype=torch.float32) + 0.5) / shape[2]
    scores = torch.zeros((1, 2, *shape))
    scores[:, 1] = x - edge
    return scores


def test_actions_on_a_coarser_native_grid_put_the_edge_between_working_voxels():
    """An enlarged ROI: the argmax of the interpolated scores finds the edge at its physical place,
    where the working grid's own argmax, taken by nearest neighbour, snaps it to a working voxel."""
    grid = WorkingGrid(native_shape=(2, 3, 4), shape=(2, 3, 6))
    scores = _ramp_scores(grid.shape, edge=0.4)  # native voxel 1 (x = 0.375) is left of the edge ...
    native = grid.argmax_to_native(scores)
    x_native = (torch.arange(4) + 0.5) / 4
    assert native.shape == (1, 2, 3, 4)
    assert torch.equal(native[0, 0, 0], (x_native > 0.4).long())
    nearest = torch.nn.functional.interpolate(scores.argmax(1, keepdim=True).float(), size=grid.native_shape,
                                              mode="nearest-exact")[0, 0, 0, 0]
    assert nearest[1] == 1  # ... but its nearest working voxel (x = 0.417) is right of it
    torch.testing.assert_close(grid.argmax_to_native(scores.bfloat16().contiguous(memory_format=torch.channels_last_3d)),
                               native)  # the session's bfloat16 channels-last scores give the same actions


def test_actions_on_a_finer_native_grid_come_by_nearest_neighbour():
    """A large ROI's native grid is finer than its working grid: each working voxel's action is
    repeated over the native voxels it covers (no six-score interpolation per native voxel)."""
    grid = WorkingGrid(native_shape=(2, 2, 8), shape=(1, 1, 4))
    scores = torch.randn((1, 6, 1, 1, 4), generator=torch.Generator().manual_seed(0))
    native = grid.argmax_to_native(scores)
    assert native.shape == (1, 2, 2, 8)
    assert torch.equal(native[0, 1, 0], scores.argmax(1)[0, 0, 0].repeat_interleave(2))


def test_session_on_a_large_roi_runs_the_networks_on_the_capped_grid(untrained_model):
    image = Volume(np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32))
    session = InteractiveSession(image, untrained_model, roi=((0, 0, 0), (64, 64, 64)), max_working_voxels=32**3,
                                 steps_per_round=1)  # one step: its moves are actions of A
    session.add_click((30, 30, 30), True)
    summary = session.step()
    assert summary["working_size_ijk"] == [32, 32, 32]
    assert session.probability.shape == (64, 64, 64) and session.confidence_map().shape == (64, 64, 64)
    moved = session.last_round.p_after.astype(int) - session.last_round.p_before.astype(int)
    assert set(np.unique(moved).tolist()) <= set(ACTION_TENTHS)  # eq. 1 on the scan's own voxels
    session.undo()
    assert np.all(session.probability_tenths == 5)


def _thick_slices(volume: Volume, factor: int) -> Volume:
    """The volume as a scanner with ``factor`` times thicker k slices would give it (float32)."""
    k, j, i = volume.shape
    return resample_to_shape(volume.with_array(volume.array.astype(np.float32)), (k // factor, j, i))


def test_bundled_model_keeps_its_accuracy_on_thick_slices(bundled_model_float32, monkeypatch):
    """The real sample with 3x thicker slices: the working grid is what keeps the model accurate
    there (without it, the networks see a squashed object)."""
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = read_volume(resource_path(*SAMPLE_LABEL))
    thick_image = _thick_slices(image, 3)
    thick_label = _thick_slices(label.with_array((label.array > 0).astype(np.float32)), 3).array > 0.5
    iso_run, _ = simulate_mecca(bundled_model_float32, image, label.array > 0, rounds=5, clicks_per_round=3)
    thick_run, thick_session = simulate_mecca(bundled_model_float32, thick_image, thick_label, rounds=5, clicks_per_round=3)
    assert thick_session.last_round.working_shape is not None
    monkeypatch.setattr(session_module, "working_grid", lambda shape, *_: WorkingGrid(tuple(shape), tuple(shape)))
    squashed_run, _ = simulate_mecca(bundled_model_float32, thick_image, thick_label, rounds=5, clicks_per_round=3)
    print("Dice per round: isotropic", iso_run.dice, "thick slices", thick_run.dice, "without working grid", squashed_run.dice)
    assert thick_run.dice[-1] >= iso_run.dice[-1] - 0.1
    assert thick_run.dice[-1] >= squashed_run.dice[-1] + 0.1


def test_resample_to_shape_keeps_the_physical_box():
    volume = Volume(np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8), spacing=(1.0, 1.0, 3.0), origin=(5.0, 6.0, 7.0))
    fine = resample_to_shape(volume, (12, 6, 8))
    assert fine.spacing == (1.0, 1.0, 1.0) and fine.origin == (5.0, 6.0, 6.0)  # outer edge of slice 0 stays at 5.5 mm
    first, last = (fine.index_to_world((0, 0, 0)), fine.index_to_world((0, 0, 11)))
    assert np.allclose(first, (5.0, 6.0, 6.0)) and np.allclose(last, (5.0, 6.0, 17.0))


def test_thick_slice_cases_train_on_near_isotropic_voxels(tmp_path):
    """Training sees what the session shows the networks: a thick-slice case is resampled at load."""
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = read_volume(resource_path(*SAMPLE_LABEL))
    thick_image = _thick_slices(image, 3)
    thick_label = thick_image.with_array(
        (_thick_slices(label.with_array((label.array > 0).astype(np.float32)), 3).array > 0.5).astype(np.uint8))
    for folder, volume in (("imagesTr", thick_image), ("labelsTr", thick_label)):
        write_volume(volume, tmp_path / folder / "thick_001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Thick", "labels": {"0": "background", "1": "object"},
                                                       "training": [{"image": "./imagesTr/thick_001.nii.gz",
                                                                     "label": "./labelsTr/thick_001.nii.gz"}]}))
    train, _, _ = load_cases([str(tmp_path)], None, validation_fraction=0.0, progress=False)
    case = train[0]
    assert np.allclose(case.image.spacing, image.spacing, rtol=0.05)  # back to the 1 mm of the original
    assert case.label.shape == case.image.shape
    voxel_volume = np.prod(case.image.spacing)
    thick_volume = np.prod(thick_label.spacing)
    assert abs(case.label.sum() * voxel_volume - thick_label.array.sum() * thick_volume) < 0.1 * thick_label.array.sum() * thick_volume


def _write_case(folder, name: str, image: Volume, label: Volume) -> None:
    for sub, volume in (("imagesTr", image), ("labelsTr", label)):
        write_volume(volume, folder / sub / f"{name}.nii.gz")


def test_small_roi_cases_train_enlarged_and_validation_cases_stay_as_they_are(tmp_path):
    """A training case whose object box is small is enlarged by the factor the session would use
    (same physical box, same object volume); held-out cases stay on their own voxels, since the
    session that scores them resamples them itself."""
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = read_volume(resource_path(*SAMPLE_LABEL))
    label = label.with_array((label.array > 0).astype(np.uint8))
    names = [f"case_{i:03d}" for i in range(5)]
    for name in names:
        _write_case(tmp_path, name, image, label)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Small", "labels": {"0": "background", "1": "object"},
                                                       "training": [{"image": f"./imagesTr/{n}.nii.gz",
                                                                     "label": f"./labelsTr/{n}.nii.gz"} for n in names]}))
    lo, hi = label_box(label.array)  # the ROI a user draws: object box + margin, (i, j, k)
    roi = (np.array(hi) - np.array(lo))[::-1]
    expected = working_grid(roi, label.spacing_kji, None, 64**3)
    assert not expected.is_native  # the sample's box is small enough to be enlarged
    factor = np.array(expected.shape) / roi
    train, validation, _ = load_cases([str(tmp_path)], None, validation_fraction=0.2, progress=False,
                                      min_working_voxels=64**3)
    assert len(train) == 4 and len(validation) == 1
    assert validation[0].image.shape == image.shape and np.array_equal(validation[0].label, label.array)
    case = train[0]
    assert np.allclose(np.array(case.image.shape) / np.array(image.shape), factor, rtol=0.02)
    assert np.allclose(np.array(case.image.spacing) * case.image.shape[::-1], np.array(image.spacing) * image.shape[::-1])
    enlarged_volume = case.label.sum() * np.prod(case.image.spacing)
    assert abs(enlarged_volume - label.array.sum() * np.prod(label.spacing)) < 0.1 * label.array.sum() * np.prod(label.spacing)
    plain, _, _ = load_cases([str(tmp_path)], None, validation_fraction=0.2, progress=False)
    assert plain[0].image.shape == image.shape  # no minimum: as it is
