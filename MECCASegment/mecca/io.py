"""Reading and writing volumes with their geometry (SimpleITK) and JSON results.

Every write goes to a temporary file in the destination folder and is renamed into place, so an
interrupted write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .volume import Volume, simpleitk

if TYPE_CHECKING:
    import SimpleITK as sitk

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _has_supported_suffix(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _check_scalar_3d(image: sitk.Image, path: Path) -> None:
    """Only 3D scalar images map onto a Volume; others are refused before their geometry is read."""
    size = image.GetSize()
    if image.GetDimension() == 2:
        raise InputError(f"{path}: a 2D image (size {size}); MECCA segments 3D volumes: load the whole "
                         "series (all slices) as one 3D volume")
    if image.GetDimension() != 3:
        raise InputError(f"{path}: a {image.GetDimension()}D image (size {size}); extract one 3D volume first "
                         "(one time point or channel, e.g. with Slicer's Sequences module)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel (a colour or "
                         "vector image); convert it to one scalar channel first (e.g. Slicer's "
                         "Vector to Scalar Volume module)")


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D scalar image with its geometry.

    Parameters
    ----------
    path : path
        A NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``,
        ``.mhd``) file.

    Returns
    -------
    Volume
        The voxels (numpy (k, j, i) order) and the ITK geometry (spacing, origin, direction in LPS).

    Raises
    ------
    InputError
        A missing or unreadable file, another format, or an image that is not 3D and scalar.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not _has_supported_suffix(path):
        raise InputError(f"{path}: unsupported format; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        image = simpleitk().ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot be read as an image ({str(error).strip().splitlines()[-1]})") from error
    _check_scalar_3d(image, path)
    return Volume.from_sitk(image, name=path.name)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any error
    it is removed. Readers never see half a file and a failed write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the user's usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


NIFTI_MAX_VOXELS_PER_AXIS = 32767  # the NIfTI-1 header stores each size as a signed 16-bit number


def check_nifti_size(size_ijk, name: str) -> None:
    """Refuse an image whose results NIfTI cannot hold, before any work is done for them."""
    if max(size_ijk) > NIFTI_MAX_VOXELS_PER_AXIS:
        raise InputError(f"{name}: size {tuple(int(v) for v in size_ijk)} has more than {NIFTI_MAX_VOXELS_PER_AXIS} "
                         "voxels along an axis, more than a NIfTI file can hold; crop or resample the image first")


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if not _has_supported_suffix(path):
        raise InputError(f"{path}: unsupported format; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    suffix = next(s for s in SUPPORTED_SUFFIXES if path.name.lower().endswith(s))
    if suffix in (".nii.gz", ".nii"):
        check_nifti_size(volume.size_ijk, str(path))
    with atomic_path(path, suffix) as tmp:
        simpleitk().WriteImage(volume.to_sitk(), tmp, compress)
    return path


def _strict_json(value):
    """NaN / infinity (e.g. an undefined metric) as null, so that any JSON parser reads the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_json(data, path: str | os.PathLike) -> Path:
    """Atomic, strict JSON write (non-finite numbers become null)."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as handle:
        json.dump(_strict_json(data), handle, indent=2, allow_nan=False)
    return Path(path)
