"""The bad-input matrix of docs/robustness.md: every case either gives a clear error (what is wrong
and what to do) or is handled with a result we check; nothing crashes, nothing is silently wrong.

Cases that other test files already cover are listed in the table with their test, not repeated
here.
"""

from __future__ import annotations

import errno
import json
import re
import threading
import time
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import FileCreatingPickle
from mecca import checkpoint
from mecca.checkpoint import load_model, load_training_state, save_model, save_training_state
from mecca.cli import main
from mecca.datasets import MSDDataset, check_dataset
from mecca.errors import CheckpointError, InputError
from mecca.io import read_volume, write_json, write_volume
from mecca.networks import MeccaModel, NetworkConfig
from mecca.session import InteractiveSession
from mecca.volume import Volume
from safetensors.torch import load_file, save_file

SMALL = NetworkConfig(width=8, confidence_width=8)
BOX = ((4, 6, 2), (30, 34, 20))  # (i, j, k) ROI around the blob of conftest's blob_volume
CENTRE = (18, 20, 12)  # (i, j, k) centre of that blob


def _kji(ijk) -> tuple[int, int, int]:
    return tuple(int(v) for v in reversed(ijk))


def _round(volume: Volume, model, clicks=((CENTRE, True),)) -> tuple[np.ndarray, np.ndarray]:
    """Probability (tenths) and confidence after one round in the fixed ROI with ``clicks``."""
    session = InteractiveSession(volume, model, roi=BOX)
    for ijk, positive in clicks:
        session.add_click(ijk, positive)
    session.step()
    return session.probability_tenths, session.confidence_map()


def _assert_valid_result(p_tenths: np.ndarray, confidence: np.ndarray) -> None:
    assert p_tenths.dtype == np.uint8 and p_tenths.max() <= 10
    assert np.isfinite(confidence).all() and confidence.min() >= 0 and confidence.max() <= 1


# -- images ---------------------------------------------------------------------------------------
def _write_2d(path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.int16)), str(path))


def _write_4d(path):
    sitk.WriteImage(sitk.JoinSeries([sitk.Image(12, 10, 4, sitk.sitkInt16)] * 2), str(path))


def _write_rgb(path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 10, 12, 3), np.uint8), isVector=True), str(path))


@pytest.mark.parametrize("write, filename, message", [
    (_write_2d, "slice.nii.gz", "a 2D image .* load the whole series"),
    (_write_4d, "series.nii.gz", "a 4D image .* extract one 3D volume"),
    (_write_rgb, "colour.nrrd", "3 components per voxel .* convert it to one scalar channel"),
], ids=["2D", "4D", "multi-component"])
def test_files_that_are_not_3d_scalar_images_are_refused_on_reading(tmp_path, write, filename, message):
    write(tmp_path / filename)
    with pytest.raises(InputError, match=message):
        read_volume(tmp_path / filename)


@pytest.mark.parametrize("array, spacing, message", [
    (np.zeros((40, 36), np.int16), (1, 1, 1), "3D scalar image is needed, got 2 dimensions.*whole series"),
    (np.zeros((2, 8, 8, 8), np.int16), (1, 1, 1), "got 4 dimensions.*extract one channel"),
    (np.zeros((0, 8, 8), np.int16), (1, 1, 1), "the image is empty"),
    (np.zeros((4, 4, 4), np.complex64), (1, 1, 1), "not a real scalar; convert"),
    (np.full((4, 4, 4), np.nan, np.float32), (1, 1, 1), "every voxel is NaN or infinite"),
    (np.full((4, 4, 4), np.inf, np.float64), (1, 1, 1), "every voxel is NaN or infinite"),
    (np.full((4, 4, 4), 1e300, np.float64), (1, 1, 1), "beyond the .* 32-bit floats hold; rescale"),
    (np.zeros((4, 4, 4), np.int16), (1, 0, 1), "spacing .* three positive numbers"),
    (np.zeros((4, 4, 4), np.int16), (1, -0.5, 1), "spacing .* three positive numbers"),
    (np.zeros((4, 4, 4), np.int16), (1, np.nan, 1), "spacing .* three positive numbers"),
], ids=["2D", "4D", "empty", "complex", "all NaN", "all Inf", "float64 beyond float32", "zero spacing",
        "negative spacing", "NaN spacing"])
def test_images_the_networks_cannot_use_are_refused(untrained_model, array, spacing, message):
    with pytest.raises(InputError, match=message):
        InteractiveSession(Volume(array, spacing=spacing), untrained_model)


@pytest.mark.parametrize("direction", [(0.0,) * 9, (1, 0, 0, 0, 1, 0, 0, 0, np.nan), (1, 0, 0, 1)],
                         ids=["singular", "NaN", "not 3x3"])
def test_a_broken_direction_matrix_is_refused(direction):
    with pytest.raises(InputError, match="direction matrix .* not an invertible 3x3 matrix"):
        Volume(np.zeros((4, 4, 4), np.int16), direction=direction)


@pytest.mark.parametrize("values", [np.full((6, 7, 8), 7, np.int16), np.full((6, 7, 8), -1000.0, np.float32),
                                    np.where(np.arange(6 * 7 * 8).reshape(6, 7, 8) % 2, np.nan, 0.0).astype(np.float32)],
                         ids=["int", "float", "zero and NaN"])
def test_a_constant_image_is_refused(values, untrained_model):
    """Nothing to segment; ITK reads an all-NaN NIfTI file as all 0, which lands here too."""
    with pytest.raises(InputError, match="constant image holds nothing to segment"):
        InteractiveSession(Volume(values), untrained_model)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["NaN", "+Inf", "-Inf"])
def test_some_nan_or_infinite_voxels_take_the_lowest_finite_value_of_the_roi(blob_volume, untrained_model,
                                                                             bad_value):
    volume, _ = blob_volume
    image = volume.array.astype(np.float32)
    holes = np.zeros(image.shape, bool)
    holes[10:13, 18:22, 16:20] = True  # inside the blob and the ROI
    roi = tuple(slice(lo, hi) for lo, hi in zip(_kji(BOX[0]), _kji(BOX[1])))
    filled = np.where(holes, image[roi][~holes[roi]].min(), image)
    got = _round(volume.with_array(np.where(holes, bad_value, image)), untrained_model)
    expected = _round(volume.with_array(filled), untrained_model)
    _assert_valid_result(*got)
    assert np.array_equal(got[0], expected[0]) and np.allclose(got[1], expected[1], atol=1e-6)


@pytest.mark.parametrize("suffix, expected", [(".nrrd", np.nan), (".mha", np.nan), (".nii.gz", 0.0)])
def test_nan_voxels_survive_reading_except_in_nifti_where_itk_reads_them_as_zero(tmp_path, suffix, expected):
    values = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    values[0, 0, :2] = np.nan
    back = read_volume(write_volume(Volume(values), tmp_path / f"v{suffix}")).array
    assert np.array_equal(back[0, 0, :2], [expected] * 2, equal_nan=True) and np.array_equal(back[1:], values[1:])


NUMERIC_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64]


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_voxel_type_gives_the_same_round_for_the_same_values(blob_volume, untrained_model, dtype):
    volume, _ = blob_volume
    values = np.clip(volume.array, 0, 100)  # whole numbers that every type holds exactly
    expected = _round(volume.with_array(values.astype(np.float64)), untrained_model)
    got = _round(volume.with_array(values.astype(dtype)), untrained_model)
    assert np.array_equal(got[0], expected[0]) and np.allclose(got[1], expected[1], atol=1e-6)


def test_a_boolean_image_is_used_as_zeros_and_ones(blob_volume, untrained_model):
    volume, label = blob_volume
    got = _round(volume.with_array(label.astype(bool)), untrained_model)
    expected = _round(volume.with_array(label.astype(np.uint8)), untrained_model)
    assert np.array_equal(got[0], expected[0]) and np.allclose(got[1], expected[1])


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
def test_the_full_range_of_every_type_keeps_the_object_brighter_after_normalisation(blob_volume, dtype):
    from mecca.environment import normalize_image

    _, label = blob_volume
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    high, low = dtype(info.max), dtype(info.min)
    if dtype == np.float64:  # beyond float32: refused, see test_images_the_networks_cannot_use_are_refused
        high, low = dtype(1e38), dtype(-1e38)
    normalized = normalize_image(np.where(label > 0, high, low))
    assert np.isfinite(normalized).all()
    assert normalized[label > 0].min() > normalized[label == 0].max()


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES + [bool], ids=lambda d: np.dtype(d).name)
def test_every_voxel_type_is_written_and_read_back_with_its_values(tmp_path, blob_volume, dtype):
    volume, label = blob_volume
    values = label.astype(dtype)
    back = read_volume(write_volume(volume.with_array(values), tmp_path / "v.nii.gz"))
    assert np.array_equal(back.array, values)  # bool and float16 come back widened (uint8, float32)


def test_very_anisotropic_spacing_keeps_the_roi_margin_in_millimetres(untrained_model):
    image = np.zeros((20, 64, 64), np.int16)
    image[8:12, 24:40, 24:40] = 200
    volume = Volume(image, spacing=(0.4, 0.4, 6.0))
    session = InteractiveSession(volume, untrained_model, roi_margin_mm=12.0)
    session.add_click_world(volume.index_to_world((32, 30, 10)), True)
    assert session.clicks[0].position == (10, 30, 32)
    # 12 mm = 30 voxels of 0.4 mm in-plane but only 2 slices of 6 mm
    assert session.current_box() == ((8, 0, 2), (13, 61, 63))
    session.step()
    _assert_valid_result(session.probability_tenths, session.confidence_map())


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


DIRECTIONS = {"axial": np.eye(3), "oblique about z": _rotation(2, 25),
              "double oblique": _rotation(0, 20) @ _rotation(2, -35),
              "left-handed": np.diag([-1.0, 1.0, 1.0]) @ _rotation(1, 15)}


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_world_clicks_land_on_the_voxel_itk_finds_in_oblique_images(untrained_model, direction):
    volume = Volume(np.arange(12 * 16 * 20, dtype=np.int16).reshape(12, 16, 20), spacing=(0.7, 0.9, 2.5),
                    origin=(-30.0, 12.0, 50.0), direction=direction.ravel())
    session = InteractiveSession(volume, untrained_model)
    itk = volume.to_sitk()
    for ijk in np.random.default_rng(0).uniform(0, [19, 15, 11], (20, 3)):
        point = itk.TransformContinuousIndexToPhysicalPoint(ijk.tolist())
        click = session.add_click_world(point, True)
        assert click.position == _kji(itk.TransformPhysicalPointToIndex(point))


def test_a_ras_click_through_mecca_segment_and_an_lps_click_through_the_session_hit_one_voxel(
        tmp_path, blob_volume, untrained_model):
    volume, _ = blob_volume  # oblique direction, anisotropic spacing
    write_volume(volume, tmp_path / "image.nrrd")
    save_model(untrained_model, tmp_path / "model.safetensors")
    lps = volume.index_to_world(CENTRE)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    (tmp_path / "clicks.json").write_text(json.dumps(
        {"coordinate_system": "RAS", "clicks": [{"point": ras.tolist(), "positive": True}]}))
    assert main(["segment", "--image", str(tmp_path / "image.nrrd"), "--clicks", str(tmp_path / "clicks.json"),
                 "--out", str(tmp_path / "out"), "--model", str(tmp_path / "model.safetensors")]) == 0
    segmented = json.loads((tmp_path / "out" / "summary.json").read_text())["clicks"][0]["ijk"]
    session_click = InteractiveSession(volume, untrained_model).add_click_world(lps, True)
    assert segmented == list(CENTRE) and session_click.position == _kji(CENTRE)


HUGE_SHAPE = (600, 1024, 1024)  # (k, j, i): 1024 x 1024 x 600 voxels, 1.26 GB as int16


def test_a_huge_volume_is_segmented_through_its_roi_with_at_most_one_float32_copy(untrained_model):
    """After a round, the Slicer module reads the mask and the confidence map of the whole volume:
    one uint8 state, one uint8 mask, one float32 map. A second float32 copy (4 bytes per voxel more)
    would break the bound."""
    image = np.zeros(HUGE_SHAPE, np.int16)  # pages never written take no memory
    image[290:310, 490:530, 490:530] = 300
    volume = Volume(image, spacing=(0.5, 0.5, 1.0))
    tracemalloc.start()
    try:
        session = InteractiveSession(volume, untrained_model, roi_margin_mm=10.0)
        session.add_click((510, 510, 300), True)
        summary = session.step()
        mask, confidence = session.mask, session.confidence_map()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    lo, hi = np.array(summary["roi_lo_ijk"]), np.array(summary["roi_hi_ijk"])
    assert (hi - lo).tolist() == [41, 41, 21]  # 10 mm around the click: 20 voxels in-plane, 10 slices
    assert peak < image.size * (4 + 1 + 1 + 1)  # float32 map + uint8 state + uint8 mask + 1 byte to spare
    assert confidence.shape == mask.shape == HUGE_SHAPE and summary["changed_voxels"] > 0
    roi = tuple(slice(a, b) for a, b in zip(lo[::-1], hi[::-1]))
    assert mask.sum(dtype=np.int64) == mask[roi].sum(dtype=np.int64)  # nothing outside the ROI
    assert (confidence[roi] < 1).any()
    confidence[roi] = 1.0
    assert confidence.min() == 1.0  # outside the ROI no action was taken: confidence 1


def test_the_whole_volume_probability_is_one_float32_copy(untrained_model):
    volume = Volume(np.zeros((64, 256, 256), np.int16))
    volume.array[0, 0, 0] = 1  # not constant
    session = InteractiveSession(volume, untrained_model)
    tracemalloc.start()
    try:
        probability = session.probability
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert probability.dtype == np.float32 and peak < volume.array.size * 4 + (1 << 20)


# -- clicks ---------------------------------------------------------------------------------------
def test_a_world_click_outside_the_image_is_refused(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model)
    with pytest.raises(InputError, match="lies outside the image"):
        session.add_click_world(volume.index_to_world((-3, 20, 12)), True)
    assert session.clicks == []


def test_an_roi_that_leaves_out_a_queued_click_is_refused(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model)
    session.add_click(CENTRE, True)
    with pytest.raises(InputError, match="outside"):
        session.set_roi((0, 0, 0), (10, 10, 10))


def test_the_same_click_twice_counts_once(blob_volume, untrained_model):
    volume, _ = blob_volume
    twice = _round(volume, untrained_model, clicks=((CENTRE, True), (CENTRE, True)))
    once = _round(volume, untrained_model)
    assert np.array_equal(twice[0], once[0]) and np.allclose(twice[1], once[1])


@pytest.mark.parametrize("first", [True, False], ids=["+ then -", "- then +"])
def test_the_later_of_opposite_clicks_on_one_voxel_wins(blob_volume, untrained_model, first):
    """Compared on the confidence map: the untrained model's actions barely depend on the hint,
    its confidence does."""
    volume, _ = blob_volume
    both = _round(volume, untrained_model, clicks=((CENTRE, first), (CENTRE, not first)))
    earlier, later = (_round(volume, untrained_model, clicks=((CENTRE, sign),)) for sign in (first, not first))
    assert not np.allclose(earlier[1], later[1])  # the sign of a click does matter
    assert np.allclose(both[1], later[1]) and np.array_equal(both[0], later[0])


def test_hundreds_of_clicks_in_one_round(blob_volume, untrained_model):
    volume, label = blob_volume
    voxels = np.random.default_rng(0).choice(label.size, 400, replace=False)
    session = InteractiveSession(volume, untrained_model)
    for kji in zip(*np.unravel_index(voxels, label.shape)):
        session.add_click(kji[::-1], bool(label[kji]))
    started = time.perf_counter()
    summary = session.step()
    assert time.perf_counter() - started < 10.0
    assert summary["clicks"] == 400 and len(session.clicks) == 400
    _assert_valid_result(session.probability_tenths, session.confidence_map())
    session.undo()
    assert (session.probability_tenths == 5).all() and session.clicks == []


def test_a_session_without_an_image_is_refused(untrained_model):
    with pytest.raises(InputError, match="image"):
        InteractiveSession(None, untrained_model)


# -- session --------------------------------------------------------------------------------------
def test_refine_without_clicks_in_an_roi_runs_on_the_image_and_earlier_clicks(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model, roi=BOX)
    assert session.step()["clicks"] == 0  # the policy's own reading of the image
    _assert_valid_result(session.probability_tenths, session.confidence_map())
    session.add_click(CENTRE, True)
    session.step()
    assert session.step()["clicks"] == 0 and len(session.clicks) == 1  # the earlier click stays in effect
    assert session.rounds == 3


def test_a_new_image_while_a_round_runs(blob_volume, untrained_model):
    """Sessions share the model but nothing else; a click given while a round runs waits for it and
    goes to the next round instead of changing the running round's input."""
    volume, _ = blob_volume
    other = volume.with_array(np.ascontiguousarray(volume.array[:, :, ::-1]), name="other")
    alone = [_round(v, untrained_model)[0] for v in (volume, other)]

    first = InteractiveSession(volume, untrained_model, roi=BOX)
    first.add_click(CENTRE, True)
    started, release = threading.Event(), threading.Event()
    act = first._act

    def held_act(*args):
        started.set()
        release.wait(timeout=30)
        return act(*args)

    first._act = held_act
    summaries = {}
    round_thread = threading.Thread(target=lambda: summaries.update(first=first.step()))
    round_thread.start()
    assert started.wait(timeout=30)
    second = InteractiveSession(other, untrained_model, roi=BOX)  # opened while the first round runs
    second.add_click(CENTRE, True)
    second.step()
    late_click = threading.Thread(target=first.add_click, args=((20, 22, 12), False))
    late_click.start()
    late_click.join(timeout=0.3)
    assert late_click.is_alive()  # waiting for the running round
    release.set()
    round_thread.join(timeout=30)
    late_click.join(timeout=30)
    assert summaries["first"]["clicks"] == 1 and len(first.pending_clicks) == 1
    assert np.array_equal(first.probability_tenths, alone[0])
    assert np.array_equal(second.probability_tenths, alone[1])


# -- models ---------------------------------------------------------------------------------------
def _small_model(config: NetworkConfig = SMALL) -> MeccaModel:
    return MeccaModel.create(config, seed=1)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "corrupt or truncated model file .* copy or download it again"),
    (lambda p: p.mkdir(), "a folder, not a model file; choose the .safetensors file itself"),
], ids=["empty file", "folder"])
def test_an_empty_file_or_a_folder_is_not_a_model(tmp_path, make, message):
    path = tmp_path / "model.safetensors"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


@pytest.mark.parametrize("name", ["payload.pt", "payload.pth", "payload.safetensors"])
def test_a_torch_save_pickle_is_never_executed(tmp_path, name):
    marker = tmp_path / "code-ran"
    torch.save({"policy.weight": FileCreatingPickle(str(marker))}, tmp_path / name)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / name)
    assert not marker.exists()
    with open(tmp_path / name, "rb") as handle:  # the control: unpickling the same file does run the code
        torch.load(handle, weights_only=False)
    assert marker.exists()


def test_a_baseline_model_file_is_refused_as_a_mecca_model(tmp_path):
    """The research baselines write the same file format with their own kind; the product refuses them."""
    from mecca.checkpoint import write_model_file

    meta = {"format": "mecca-model", "format_version": 1, "network": {**NetworkConfig().to_dict(), "model": "intercnn"}}
    path = write_model_file({}, {"mecca": json.dumps(meta)}, tmp_path / "intercnn.safetensors")
    with pytest.raises(CheckpointError, match="'intercnn' model .*research/baselines.*not a MECCA model"):
        load_model(path)


def _training_state(path, model: MeccaModel) -> torch.optim.Optimizer:
    """A training state after one Adam step (so it holds moments)."""
    optimizer = torch.optim.Adam(list(model.parameters()), lr=1e-3)
    model.policy(torch.randn(1, 3, 8, 8, 8))[0].square().mean().backward()
    optimizer.step()
    save_training_state(path, model, optimizer, {"epoch": 0, "step": 1, "elapsed": 0.0}, {})
    return optimizer


def _drop_tensors(path, prefix):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({k: v for k, v in load_file(str(path)).items() if not k.startswith(prefix)}, str(path), metadata)


def _with_nan(model: MeccaModel) -> MeccaModel:
    with torch.no_grad():
        next(model.policy.parameters()).view(-1)[0] = float("nan")
    return model


@pytest.mark.parametrize("saved, dropped, resumed_with, message", [
    (_small_model, None, NetworkConfig(width=16, confidence_width=8), "the saved run used another architecture"),
    (lambda: _with_nan(_small_model()), None, SMALL, "NaN or infinite .* use an earlier model file"),
    (_small_model, "adam.", SMALL, "incomplete training state .* --restart"),
], ids=["another architecture", "NaN weights", "Adam moments missing"])
def test_a_training_state_that_cannot_be_resumed_is_refused(tmp_path, saved, dropped, resumed_with, message):
    path = tmp_path / "last.safetensors"
    _training_state(path, saved())
    if dropped:
        _drop_tensors(path, dropped)
    model = _small_model(resumed_with)
    optimizer = torch.optim.Adam(list(model.parameters()))
    with pytest.raises(CheckpointError, match=message):
        load_training_state(path, model, optimizer)
    assert not optimizer.state  # nothing half-restored


# -- datasets -------------------------------------------------------------------------------------
def _blob(shape=(12, 16, 14), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    label = np.zeros(shape, np.uint8)
    label[4:8, 5:11, 4:10] = 1
    image = Volume((label * 100 + 20).astype(np.int16), spacing, origin)
    return image, image.with_array(label)


def _messy_case(root, name, image, label):
    """Write one case of a messy MSD folder: a Volume, raw bytes (an unreadable file), a function
    that writes the file, or None (the file is missing)."""
    entry = {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
    for key, content in (("image", image), ("label", label)):
        path = root / entry[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Volume):
            write_volume(content, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            content(path)
    return entry


def _messy_cases():
    image, label = _blob()
    return {
        "good_1": (image, label, None),
        "good_2": (image, label.with_array(label.array * 2), None),
        "label_without_image": (None, label, "image file .* not found; add the file or correct the path"),
        "image_without_label": (image, None, "label file .* not found; add the file or correct the path"),
        "label_other_size": (image, _blob(shape=(12, 16, 15))[1], "label size .* differs from image size .* resample"),
        "label_other_origin": (image, _blob(origin=(0.0, 5.0, 0.0))[1], "label geometry .* differs from the image"),
        "unreadable_image": (b"not an image", label, "cannot be read as an image"),
        "interpolated_label": (image, label.with_array(label.array * 0.5), "non-integer values .* nearest neighbour"),
        "negative_label": (image, label.with_array(label.array.astype(np.int8) * -1), "negative values .* use 0"),
        "empty_label": (image, label.with_array(label.array * 0), "label is empty"),
        "flat_image": (_write_2d, label, "a 2D image"),
        "all_nan_image": (image.with_array(np.full(image.shape, np.nan, np.float32)), label, "constant image"),
        "float64_beyond_float32": (image.with_array(np.full(image.shape, 1e300)), label, "32-bit floats hold"),
    }


@pytest.fixture(scope="module")
def messy_report(tmp_path_factory):
    """check_dataset's report on a folder with two good cases and one of each problem."""
    root = tmp_path_factory.mktemp("messy_msd")
    entries = [_messy_case(root, name, image, label) for name, (image, label, _) in _messy_cases().items()]
    (root / "dataset.json").write_text(json.dumps({"name": "Messy", "training": entries}))
    good, problems = check_dataset(MSDDataset.open(root))
    return [case.name for case in good], problems


def test_one_report_lists_every_bad_case_and_keeps_the_good_ones(messy_report):
    good, problems = messy_report
    bad = [name for name, (_, _, message) in _messy_cases().items() if message]
    assert good == ["good_1", "good_2"]
    assert [problem.split(":")[0] for problem in problems] == bad


@pytest.mark.parametrize("name", [n for n, (_, _, message) in _messy_cases().items() if message])
def test_each_bad_case_is_reported_with_its_problem(messy_report, name):
    _, problems = messy_report
    message = _messy_cases()[name][2]
    assert any(problem.startswith(f"{name}: ") and re.search(message, problem) for problem in problems)


def test_foreground_labels_absent_from_every_label_are_reported(hippocampus_dir):
    dataset = MSDDataset.open(hippocampus_dir)
    dataset.cases = dataset.cases[:3]
    good, problems = check_dataset(dataset, foreground_labels=(3,))
    assert good == [] and len(problems) == 3
    assert all("no voxel has a foreground value 3 (values present: 0, 1, 2)" in p for p in problems)
    assert len(check_dataset(dataset, foreground_labels=(2,))[0]) == 3


def test_unlabelled_cases_need_readable_clicks_inside_their_image(tmp_path):
    image, _ = _blob()
    inside = image.index_to_world((7, 8, 6))
    for name, point in (("inside", inside), ("outside", inside + 500.0)):
        write_json({"coordinate_system": "LPS", "clicks": [{"point": point.tolist(), "positive": True}]},
                   tmp_path / "clicksTr" / f"{name}.json")
    names = ("inside", "outside", "missing")
    for name in names:
        write_volume(image, tmp_path / "imagesTr" / f"{name}.nii.gz")
    entries = [{"image": f"imagesTr/{name}.nii.gz", "clicks": f"clicksTr/{name}.json"} for name in names]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries}))
    dataset = MSDDataset.open(tmp_path, require_labels=False)
    good, problems = check_dataset(dataset, require_labels=False)
    assert [c.name for c in good] == ["inside"]
    assert problems[0].startswith("outside: ") and "click 0 at LPS" in problems[0] and "outside the image" in problems[0]
    assert problems[1].startswith("missing: clicks file") and "not found" in problems[1]
    assert all("gives no label" in p for p in check_dataset(dataset)[1])


@pytest.mark.parametrize("manifest, message", [
    ("{", "not valid JSON"),
    (json.dumps({"name": "x"}), "the 'training' list is missing or empty"),
    (json.dumps({"training": [{"image": "a.nii.gz"}, {"label": "b.nii.gz"}, {"image": "c.nii.gz", "label": "c"}]}),
     r"2 of 3 entries cannot be used; correct or remove them:\n  entry 0 .* no label\n  entry 1 .* no image"),
], ids=["not JSON", "no training list", "entries without image or label"])
def test_a_broken_dataset_json_is_reported_whole(tmp_path, manifest, message):
    (tmp_path / "dataset.json").write_text(manifest)
    with pytest.raises(InputError, match=message):
        MSDDataset.open(tmp_path)


# -- files ----------------------------------------------------------------------------------------
def _write_half_then_fail(_content, temporary_path, *args, **kwargs):
    """Stands in for a writer that dies part way (disk full): half a file, then an error."""
    with open(temporary_path, "wb") as handle:
        handle.write(b"half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


WRITES = {
    "segmentation (write_volume)": ("segmentation.nii.gz", (sitk, "WriteImage"),
                                    lambda path, n: write_volume(Volume(np.full((2, 3, 4), n, np.uint8)), path)),
    "checkpoint (save_model)": ("model.safetensors", (checkpoint, "save_file"),
                                lambda path, n: save_model(_small_model(), path, {"n": n})),
    "results (write_json)": ("summary.json", None,  # an object JSON cannot encode stops json.dump half way
                             lambda path, n: write_json({"n": n, "later": [1] * 1000 + [object()] * n}, path)),
}


@pytest.mark.parametrize("name", WRITES)
def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch, name):
    filename, writer, write = WRITES[name]
    path = tmp_path / filename
    write(path, 0)
    before = path.read_bytes()
    if writer:
        monkeypatch.setattr(*writer, _write_half_then_fail)
    with pytest.raises((OSError, TypeError)):
        write(path, 1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [filename]


def test_a_failed_figure_write_leaves_the_old_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from mecca.report import write_evaluation_figure

    summary = {"mecca": {"cases": 1, "dice_mean_per_round": [0.5, 0.7], "dice_sd_per_round": [0.1, 0.1]}}
    path = write_evaluation_figure(tmp_path / "evaluation.png", summary, None)
    before = path.read_bytes()
    monkeypatch.setattr(Figure, "savefig", _write_half_then_fail)
    with pytest.raises(OSError):
        write_evaluation_figure(path, summary, None)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["evaluation.png"]
