"""Reading and writing volumes with their geometry (SimpleITK), and MSD-layout datasets.

Arrays are numpy in SimpleITK order (k, j, i); spacing, origin and direction are ITK's (LPS
world, direction as a row-major 3x3). Every write goes to a temporary file in the destination
folder and is renamed into place, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class InputError(ValueError):
    """Bad user input (image, label, dataset, clicks): the message says what and what to do."""


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

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape

    def with_array(self, array: np.ndarray, name: str = "") -> Volume:
        """Same geometry, other voxels (a mask or a map computed on this image)."""
        return Volume(array, self.spacing, self.origin, self.direction, name or self.name)

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, name: str = "") -> Volume:
        return cls(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), name)

    def index_to_world(self, ijk) -> np.ndarray:
        """ITK index (i, j, k), may be fractional -> LPS world point."""
        d = np.asarray(self.direction).reshape(3, 3)
        return np.asarray(self.origin) + d @ (np.asarray(ijk, float) * np.asarray(self.spacing))

    def world_to_index(self, point_lps) -> np.ndarray:
        """LPS world point -> continuous ITK index (i, j, k)."""
        d = np.asarray(self.direction).reshape(3, 3)
        return np.linalg.solve(d, np.asarray(point_lps, float) - np.asarray(self.origin)) / np.asarray(self.spacing)


def validate_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), name: str = "image") -> None:
    """Reject what the networks cannot use, naming the problem and what to do about it."""
    array = np.asarray(array)
    if array.ndim != 3:
        hint = " (a multi-component or 4D image: extract one channel/time point first)" if array.ndim == 4 else ""
        raise InputError(f"{name}: a 3D scalar image is needed, got {array.ndim} dimensions {array.shape}{hint}")
    if min(array.shape) == 0:
        raise InputError(f"{name}: the image is empty (size {array.shape[::-1]})")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise InputError(f"{name}: voxel type {array.dtype} is not a real scalar; convert to an integer or float image")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{name}: voxel spacing {tuple(spacing)} must be three positive numbers (mm)")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.any():
            raise InputError(f"{name}: every voxel is NaN or infinite; the image holds no data")


def _has_supported_suffix(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def read_volume(path: str | os.PathLike) -> Volume:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not _has_supported_suffix(path):
        raise InputError(f"{path}: unsupported format; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot be read as an image ({str(error).strip().splitlines()[-1]})") from error
    return Volume.from_sitk(image, name=path.name)


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if not _has_supported_suffix(path):
        raise InputError(f"{path}: unsupported format; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next(s for s in SUPPORTED_SUFFIXES if path.name.lower().endswith(s))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(volume.to_sitk(), tmp, compress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(data, path: str | os.PathLike) -> Path:
    """Atomic JSON write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass
class Case:
    """One dataset entry: image path and (for labelled cases) label path."""

    name: str
    image: Path
    label: Path | None = None

    def load(self, foreground_labels: tuple[int, ...] | None = None) -> tuple[Volume, np.ndarray | None]:
        """Image volume and binary label (uint8, 1 where the label value is one of the chosen ones)."""
        image = read_volume(self.image)
        if self.label is None:
            return image, None
        label = read_volume(self.label)
        if label.shape != image.shape:
            raise InputError(f"{self.name}: label size {label.shape} differs from image size {image.shape}")
        if not (np.allclose(label.spacing, image.spacing, rtol=1e-3)
                and np.allclose(label.origin, image.origin, atol=1e-2)
                and np.allclose(label.direction, image.direction, atol=1e-3)):
            raise InputError(f"{self.name}: label geometry (spacing/origin/direction) differs from the image")
        return image, binary_label(label.array, foreground_labels)


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
        cases = []
        for entry in entries:
            image = root / entry["image"] if isinstance(entry, dict) else root / entry
            label = root / entry["label"] if isinstance(entry, dict) and entry.get("label") else None
            if require_labels and label is None:
                raise InputError(f"{manifest}: entry {entry!r} has no label")
            name = Path(image).name.split(".")[0]
            cases.append(Case(name, image, label))
        return cls(root, cases, info)


def split_validation(names: list[str], fraction: float, seed: int = 0) -> set[str]:
    """Deterministic held-out subset of a dataset's case names (training and evaluation agree)."""
    count = int(round(len(names) * fraction))
    order = np.random.default_rng(seed).permutation(sorted(names))
    return set(order[:count].tolist())
