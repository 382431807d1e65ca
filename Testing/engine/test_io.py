"""Volumes keep their geometry through every format; MSD datasets are read with chosen labels."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from mecca.datasets import MSDDataset
from mecca.errors import InputError
from mecca.io import read_volume, write_json, write_volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_geometry_survives_write_and_read(tmp_path, blob_volume, suffix):
    volume, _ = blob_volume
    path = write_volume(volume, tmp_path / f"v{suffix}")
    back = read_volume(path)
    assert np.array_equal(back.array, volume.array) and back.array.dtype == volume.array.dtype
    assert np.allclose(back.spacing, volume.spacing, atol=1e-5)
    assert np.allclose(back.origin, volume.origin, atol=1e-4)
    assert np.allclose(back.direction, volume.direction, atol=1e-5)
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write left nothing behind


def test_index_world_round_trip_honours_direction_and_spacing(blob_volume):
    volume, _ = blob_volume
    ijk = np.array([3.0, 7.0, 11.0])
    world = volume.index_to_world(ijk)
    assert np.allclose(volume.world_to_index(world), ijk)
    assert np.allclose(world, volume.to_sitk().TransformContinuousIndexToPhysicalPoint(ijk.tolist()))


def test_unreadable_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be read"):
        read_volume(bad)
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    with pytest.raises(InputError, match="unsupported format"):
        read_volume(png)


def test_write_json_is_atomic(tmp_path):
    path = write_json({"a": [1, 2]}, tmp_path / "sub" / "r.json")
    assert json.loads(path.read_text()) == {"a": [1, 2]}


def test_write_json_is_strict_json(tmp_path):
    """An undefined metric (NaN, inf) is written as null: strict parsers (JavaScript, jq) read the file."""
    path = write_json({"accuracy": [0.5, float("nan")], "assd": (float("inf"), 1.0), "n": 3}, tmp_path / "r.json")

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"accuracy": [0.5, None], "assd": [None, 1.0], "n": 3}


def test_atomic_writes_get_the_users_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_json({}, tmp_path / "r.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not the 0600 of the temporary file


def test_msd_dataset_with_label_choice(hippocampus_dir):
    dataset = MSDDataset.open(hippocampus_dir)
    assert len(dataset.cases) == 220
    image, whole = dataset.cases[0].load()
    _, anterior = dataset.cases[0].load((1,))
    assert whole.shape == image.shape and whole.dtype == np.uint8
    assert 0 < anterior.sum() < whole.sum()


def test_msd_dataset_without_manifest(tmp_path):
    with pytest.raises(InputError, match="no dataset.json"):
        MSDDataset.open(tmp_path)


def test_the_engine_runs_a_session_without_simpleitk_and_says_what_reading_files_needs(tmp_path):
    """A GPU machine may hold PyTorch alone: sessions and training on arrays in memory must not
    need SimpleITK, and reading a file names the missing package."""
    script = """
import sys
sys.modules["SimpleITK"] = None  # import SimpleITK now fails
import numpy as np
from mecca import InteractiveSession, MeccaModel, NetworkConfig, Volume, read_volume
from mecca.errors import InputError
image = Volume(np.random.default_rng(0).random((12, 16, 16)).astype(np.float32))
session = InteractiveSession(image, MeccaModel.create(NetworkConfig(width=8, confidence_width=8)))
session.add_click((8, 8, 6), positive=True)
session.step()
try:
    read_volume(sys.argv[1])
except InputError as error:
    print(error)
"""
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "needs SimpleITK: pip install SimpleITK" in done.stdout


@pytest.mark.parametrize("axes", [(0, 1, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, -1, 1), (1, -1, -1)])
def test_a_slices_plane_and_sides_are_those_itk_names(axes, signs):
    """The montage's plane and edge letters agree with ITK's orientation code (DICOM: the side each
    of i, j, k points to) for permuted and flipped directions, tilted by 10 degrees."""
    import SimpleITK as sitk
    from mecca.geometry import slice_orientation

    direction = np.zeros((3, 3))
    for column, (axis, sign) in enumerate(zip(axes, signs)):
        direction[axis, column] = sign
    tilt = np.radians(10)
    rotation = np.array([[np.cos(tilt), -np.sin(tilt), 0], [np.sin(tilt), np.cos(tilt), 0], [0, 0, 1]])
    direction = rotation @ direction
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction.ravel().tolist())
    plane, edges = slice_orientation(direction.ravel())
    assert (edges["right"], edges["bottom"]) == (code[0], code[1])
    assert plane == {"L": "sagittal", "R": "sagittal", "P": "coronal", "A": "coronal", "S": "axial", "I": "axial"}[code[2]]
