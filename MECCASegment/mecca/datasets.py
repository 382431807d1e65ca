"""MSD-layout datasets (imagesTr/labelsTr and dataset.json): their cases, the checks a dataset
passes before training or evaluation, the label values that count as foreground, and the fixed
validation split."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import read_volume
from .volume import Volume, validate_image


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
