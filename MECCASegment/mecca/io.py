"""Reading and writing volumes with their geometry (SimpleITK), and MSD-layout datasets.

Arrays are numpy in SimpleITK order (k, j, i); spacing, origin and direction are ITK's (LPS
world, direction as a row-major 3x3). Every write goes to a temporary file in the destination
folder and is renamed into place, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .geometry import ijk_from_kji

if TYPE_CHECKING:
    import SimpleITK as sitk

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _simpleitk():
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
        sitk = _simpleitk()
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, name: str = "") -> Volume:
        return cls(_simpleitk().GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), name)

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
    sitk = _simpleitk()
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
        image = _simpleitk().ReadImage(str(path))
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
        _simpleitk().WriteImage(volume.to_sitk(), tmp, compress)
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


@dataclass
class Case:
    """One dataset entry: image path, label path (labelled cases) and/or recorded clicks (cases a
    user segmented interactively, used without a label, paper eq. 6)."""

    name: str
    image: Path
    label: Path | None = None
    clicks: Path | None = None

    def load(self, foreground_labels: tuple[int, ...] | None = None) -> tuple[Volume, np.ndarray | None]:
        """Image volume and binary label (uint8, 1 where the label value is one of the chosen ones)."""
        image, label_map = self.load_label_map()
        return image, None if label_map is None else binary_label(label_map, foreground_labels)

    def load_label_map(self) -> tuple[Volume, np.ndarray | None]:
        """Image volume and the label map as stored (integer class values; None without a label)."""
        image = read_volume(self.image)
        if self.label is None:
            return image, None
        label = read_volume(self.label)
        mismatch = _geometry_mismatch(image, label)
        if mismatch:
            raise InputError(f"{self.name}: {mismatch}")
        return image, np.rint(label.array).astype(np.int32) if label.array.dtype.kind == "f" else label.array


def _geometry_mismatch(image: Volume, label: Volume) -> str | None:
    """Why a label cannot be laid voxel for voxel on its image; None when it can."""
    if label.shape != image.shape:
        return (f"label size {label.size_ijk} differs from image size {image.size_ijk}; resample the label "
                "onto the image grid (nearest neighbour)")
    if not (np.allclose(label.spacing, image.spacing, rtol=1e-3)
            and np.allclose(label.origin, image.origin, atol=1e-2)
            and np.allclose(label.direction, image.direction, atol=1e-3)):
        return ("label geometry (spacing/origin/direction) differs from the image; resample the label onto the "
                "image grid (nearest neighbour) or correct its header")
    return None


def _label_values_problem(values: np.ndarray, foreground_labels: tuple[int, ...] | None) -> str | None:
    """Why a label map gives no usable foreground: non-integer or negative values, or no voxel
    with a foreground value (an empty object would train on nothing without a word)."""
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        return ("label holds non-integer values (was it resampled with linear interpolation?); labels need whole "
                "class numbers: resample it with nearest neighbour")
    if values.min() < 0:
        return f"label holds negative values (down to {values.min()}); use 0 for background and 1, 2, ... for classes"
    if binary_label(values, foreground_labels).any():
        return None
    present = ", ".join(str(v) for v in np.unique(values)[:20].tolist())
    if foreground_labels is None:
        return "label is empty (every voxel 0); segment the object in it or remove the case"
    return (f"no voxel has a foreground value {', '.join(map(str, foreground_labels))} (values present: {present}); "
            "choose the foreground labels among the values present")


def binary_label(values: np.ndarray, foreground_labels: tuple[int, ...] | None = None) -> np.ndarray:
    """Label map -> uint8 mask; None means every non-zero value is foreground."""
    if foreground_labels is None:
        return (values > 0).astype(np.uint8)
    return np.isin(values, foreground_labels).astype(np.uint8)


@dataclass
class MSDDataset:
    """A Medical Segmentation Decathlon folder: dataset.json, imagesTr/, labelsTr/."""

    root: Path
    cases: list[Case] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.get("name") or self.root.name

    @classmethod
    def open(cls, root: str | os.PathLike, require_labels: bool = True) -> MSDDataset:
        root = Path(root)
        manifest = root / "dataset.json"
        if not manifest.exists():
            raise InputError(f"{root}: no dataset.json; expected the MSD layout (dataset.json, imagesTr/, labelsTr/)")
        try:
            info = json.loads(manifest.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{manifest}: not valid JSON ({error})") from error
        entries = info.get("training")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{manifest}: the 'training' list is missing or empty")
        cases, problems = [], []
        for number, entry in enumerate(entries):
            entry = entry if isinstance(entry, dict) else {"image": entry}
            label = root / entry["label"] if entry.get("label") else None
            clicks = root / entry["clicks"] if entry.get("clicks") else None
            if not entry.get("image"):
                problems.append(f"entry {number} {entry!r} has no image")
            elif require_labels and label is None:
                problems.append(f"entry {number} {entry!r} has no label")
            elif label is None and clicks is None:
                problems.append(f"entry {number} {entry!r} has neither a label nor recorded clicks; an unlabelled "
                                "case needs the clicks a user gave (\"clicks\": path)")
            else:
                cases.append(Case(Path(entry["image"]).name.split(".")[0], root / entry["image"], label, clicks))
        if problems:
            raise InputError(f"{manifest}: {len(problems)} of {len(entries)} entries cannot be used; correct or "
                             "remove them:\n  " + "\n  ".join(problems))
        return cls(root, cases, info)

    def validation_cases(self, fraction: float) -> list[Case]:
        """The cases `mecca train` holds out with this fraction (split_validation), by name."""
        held_out = split_validation([c.name for c in self.cases], fraction)
        return sorted((c for c in self.cases if c.name in held_out), key=lambda c: c.name)

    def training_cases(self, fraction: float) -> list[Case]:
        """The cases `mecca train` trains on with this validation fraction, by name."""
        held_out = split_validation([c.name for c in self.cases], fraction)
        return sorted((c for c in self.cases if c.name not in held_out), key=lambda c: c.name)


def check_dataset(dataset: MSDDataset, foreground_labels: tuple[int, ...] | None = None,
                  require_labels: bool = True) -> tuple[list[Case], list[str]]:
    """Read every case once: (usable cases, one "name: problem; what to do" message per bad case).

    A messy folder thus gets one report of all its bad cases instead of stopping at the first;
    the caller decides whether to go on with the good ones. Problems: a missing or unreadable
    file, an image the networks cannot use, a label on another grid, label values that give no
    foreground (``foreground_labels``: as in Case.load), a case with no label where
    ``require_labels``, recorded clicks that cannot be read or miss the image.
    """
    good, problems = [], []
    for case in dataset.cases:
        problem = _case_problem(case, foreground_labels, require_labels)
        if problem is None:
            good.append(case)
        else:
            problems.append(f"{case.name}: {problem}")
    return good, problems


def _case_problem(case: Case, foreground_labels: tuple[int, ...] | None, require_labels: bool) -> str | None:
    if case.label is None and require_labels:
        return "dataset.json gives no label for it; add its label file or remove the entry"
    files = {"image": case.image, "label": case.label, "clicks": case.clicks}
    missing = [f"{role} file {path}" for role, path in files.items() if path is not None and not path.exists()]
    if missing:
        return f"{' and '.join(missing)} not found; add the file or correct the path in dataset.json"
    try:
        image = read_volume(case.image)
        validate_image(image.array, image.spacing, name=f"image {case.image.name}")
        if case.label is not None:
            label = read_volume(case.label)
            return _geometry_mismatch(image, label) or _label_values_problem(label.array, foreground_labels)
        if case.clicks is not None:
            from .clicks import read_clicks

            read_clicks(case.clicks, image)  # parses, and every click lies inside its image
        return None
    except InputError as error:
        return str(error)


def split_validation(names: list[str], fraction: float, seed: int = 0) -> set[str]:
    """Deterministic held-out subset of a dataset's case names (training and evaluation agree)."""
    count = int(round(len(names) * fraction))
    order = np.random.default_rng(seed).permutation(sorted(names))
    return set(order[:count].tolist())
