"""A 3D scalar image with its physical geometry (Volume), and what the engine accepts as one.

Arrays are numpy in SimpleITK order (k, j, i); spacing, origin and direction are ITK's (LPS
world, direction as a row-major 3x3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .geometry import ijk_from_kji

if TYPE_CHECKING:
    import SimpleITK as sitk


def simpleitk():
    """SimpleITK, imported where a file is read, written or resampled: the rest of the engine (a
    session, training on cases already in memory) runs where it is not installed, as on a GPU
    machine that has PyTorch alone."""
    try:
        import SimpleITK
    except ImportError as error:
        raise InputError("reading, writing or resampling image files needs SimpleITK: pip install SimpleITK") \
            from error
    return SimpleITK


@dataclass


class Volume:
    """A 3D scalar image and its physical geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    name: str = ""

    def __post_init__(self):
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in np.asarray(self.direction).ravel())
        _check_direction(self.direction, self.name or "image")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy (k, j, i) shape."""
        return self.array.shape

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """ITK/Slicer (i, j, k) size, as messages to the user give it."""
        return ijk_from_kji(self.array.shape)

    @property
    def spacing_kji(self) -> tuple[float, float, float]:
        """Voxel spacing in numpy (k, j, i) order (``spacing`` is ITK's (i, j, k))."""
        return tuple(reversed(self.spacing))

    def with_array(self, array: np.ndarray, name: str = "") -> Volume:
        """Same geometry, other voxels (a mask or a map computed on this image)."""
        return Volume(array, self.spacing, self.origin, self.direction, name or self.name)

    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype in _WIDENED_FOR_ITK:  # types ITK has no pixel type for, widened without loss
            array = array.astype(_WIDENED_FOR_ITK[array.dtype])
        sitk = simpleitk()
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, name: str = "") -> Volume:
        return cls(simpleitk().GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), name)

    def index_to_world(self, ijk) -> np.ndarray:
        """ITK index (i, j, k), may be fractional -> LPS world point."""
        d = np.asarray(self.direction).reshape(3, 3)
        return np.asarray(self.origin) + d @ (np.asarray(ijk, float) * np.asarray(self.spacing))

    def world_to_index(self, point_lps) -> np.ndarray:
        """LPS world point -> continuous ITK index (i, j, k)."""
        d = np.asarray(self.direction).reshape(3, 3)
        return np.linalg.solve(d, np.asarray(point_lps, float) - np.asarray(self.origin)) / np.asarray(self.spacing)


FLOAT32_MAX = float(np.finfo(np.float32).max)
_WIDENED_FOR_ITK = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}


def resample_to_shape(volume: Volume, shape_kji, nearest: bool = False) -> Volume:
    """The same physical box on a grid of ``shape_kji`` voxels (SimpleITK); a label needs ``nearest``."""
    sitk = simpleitk()
    image = volume.to_sitk()
    size = list(ijk_from_kji(shape_kji))
    spacing = np.asarray(volume.spacing) * np.asarray(image.GetSize()) / np.asarray(size)
    direction = np.reshape(volume.direction, (3, 3))
    origin = np.asarray(volume.origin) + direction @ ((spacing - np.asarray(volume.spacing)) / 2)  # same outer edge
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                              origin.tolist(), spacing.tolist(), volume.direction, 0.0,
                              image.GetPixelID() if nearest else sitk.sitkFloat32)
    return Volume(sitk.GetArrayFromImage(resampled), tuple(spacing), tuple(origin), volume.direction, volume.name)


def _check_direction(direction: tuple[float, ...], name: str) -> None:
    """World <-> voxel mapping needs an invertible 3x3 direction; a broken one would put clicks
    on arbitrary voxels (or fail deep inside numpy), so it is refused where the volume is made."""
    matrix = np.asarray(direction, dtype=float)
    if matrix.shape != (9,) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix.reshape(3, 3))) < 1e-6:
        raise InputError(f"{name}: direction matrix {tuple(direction)} is not an invertible 3x3 matrix; the "
                         "image header's orientation is broken: fix it (e.g. reset the orientation in the "
                         "image's header) before segmenting")


def validate_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), name: str = "image") -> None:
    """Reject what the networks cannot use, naming the problem and what to do about it."""
    array = np.asarray(array)
    if array.ndim != 3:
        hint = {2: "load the whole series (all slices) as one 3D volume",
                4: "a multi-component or 4D image: extract one channel/time point first"}.get(array.ndim, "")
        raise InputError(f"{name}: a 3D scalar image is needed, got {array.ndim} dimensions {array.shape}"
                         + (f"; {hint}" if hint else ""))
    if min(array.shape) == 0:
        raise InputError(f"{name}: the image is empty (size {ijk_from_kji(array.shape)}); load it again or choose another")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise InputError(f"{name}: voxel type {array.dtype} is not a real scalar; convert to an integer or float image")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{name}: voxel spacing {tuple(spacing.tolist())} must be three positive numbers (mm); "
                         "correct the spacing in the image header (e.g. Slicer's Volumes module, Volume Information)")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.any():
            raise InputError(f"{name}: every voxel is NaN or infinite; the image holds no data: check the file "
                             "or the conversion that made it")
        if array.dtype.itemsize > 4:  # the networks compute in float32: larger values would become infinite
            low, high = array.min(where=finite, initial=np.inf), array.max(where=finite, initial=-np.inf)
            if max(-low, high) > FLOAT32_MAX:
                raise InputError(f"{name}: voxel values reach {low:.3g} .. {high:.3g}, beyond the +/-{FLOAT32_MAX:.3g} "
                                 "that 32-bit floats hold; rescale the image (e.g. to its physical units)")
    values = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
    if values.min() == values.max():
        raise InputError(f"{name}: every voxel is {values.flat[0]:g}: a constant image holds nothing to segment "
                         "(ITK reads the NaN voxels of a NIfTI file as 0, so an all-NaN NIfTI image reads so); check "
                         "the file or the conversion that made it")
