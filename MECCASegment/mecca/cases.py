"""The cases a run trains and validates on: MSD folders read into memory, each training case on
the grid the session shows the networks (working_grid.py)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from .clicks import Click, read_clicks
from .datasets import MSDDataset, binary_label, check_dataset, split_validation
from .errors import InputError
from .geometry import EVAL_ROI_MARGIN, ijk_from_kji, kji_from_ijk, label_box
from .volume import Volume, resample_to_shape
from .working_grid import working_grid

STRUCTURE_MODES = ("union", "each")
MIN_STRUCTURE_VOXELS = 20  # a contour smaller than this is a stray mark, not an object a user would segment
UNION_CONNECTED = 0.9  # share of a union's voxels its largest connected part must hold to count as one object
STRUCTURE_CONTEXT = 32  # working-grid voxels kept around a structure's box (the widest crop margin is 24)


@dataclass
class TrainingCase:
    name: str
    dataset: str  # the MSD dataset's name, with ":structure" when its label values train as objects of their own
    image: Volume
    label: np.ndarray  # uint8; for unlabelled cases only the simulated user reads it (all 0 if unknown)
    labeled: bool = True
    recorded_clicks: dict[int, list[Click]] | None = None  # a user's clicks by round (1-based), replayed


def _recorded_clicks(path, image: Volume) -> dict[int, list[Click]]:
    """A clicks file (the format of ``mecca segment``) as array-index clicks by round."""
    rounds, _ = read_clicks(path, image)
    out: dict[int, list[Click]] = {}
    for round_, clicks in rounds.items():
        for ijk, positive in clicks:
            index = kji_from_ijk(np.rint(ijk))
            if all(0 <= v < s for v, s in zip(index, image.shape)):
                out.setdefault(round_, []).append(Click(index, positive))
    if not out:
        raise InputError(f"{path}: no click lies inside its image")
    return out


def load_cases(dataset_dirs: list[str], labels: tuple[int, ...] | None, validation_fraction: float,
               unlabeled_dirs: list[str] = (), labeled_fraction: float = 1.0, progress: bool = True,
               skip_bad: bool = False, rest_unlabeled: bool = False, min_working_voxels: int | None = None,
               structures: str = "union"):
    """Read datasets into memory; returns (train, validation, record of what was used).

    Training cases are put on the grid the session shows the networks (``_on_training_grid``, with
    the model's ``min_working_voxels``); validation cases stay as they are, since the session they
    are scored through resamples them itself, and their Dice is on the scan's own voxels.

    ``labeled_fraction`` keeps the labels of that fraction of each labelled dataset's training
    cases; the others are left out, or with ``rest_unlabeled`` take part as unlabelled cases (their
    label is then read only by the simulated user, to click).

    ``structures``: "union" trains the chosen label values (``labels``, default every non-zero
    value) as one object; "each" trains every chosen value as an object of its own, and their
    union where it forms one object (``structures``): what a class-agnostic model learns from a
    label map of seven organs. Such a case becomes one TrainingCase per structure, named
    ``dataset:structure`` (the dataset.json's label names), its training grid cropped to the
    structure's surroundings.

    Every case is checked first: bad cases are reported together, and training stops unless
    ``skip_bad`` asks to go on with the good ones.
    """
    if structures not in STRUCTURE_MODES:
        raise InputError(f"structures must be one of {', '.join(STRUCTURE_MODES)}, got {structures!r}")
    train, validation, record = [], [], {"datasets": []}
    for root, labeled_source in [(d, True) for d in dataset_dirs] + [(d, False) for d in unlabeled_dirs]:
        dataset = MSDDataset.open(root, require_labels=False)
        good, problems = check_dataset(dataset, labels, require_labels=labeled_source)
        if problems:
            report = f"{dataset.name}: {len(problems)} unusable case(s):\n  " + "\n  ".join(problems)
            if not skip_bad:
                raise InputError(report + "\nFix them, or pass --skip-bad to train on the other cases.")
            warnings.warn(report + "\nThese cases are skipped (--skip-bad).", stacklevel=2)
        names = [c.name for c in dataset.cases]  # the split ignores which cases are bad: it stays stable
        held_out = split_validation(names, validation_fraction) if labeled_source else set()
        kept_labels = _labeled_subset(sorted(set(names) - held_out), labeled_fraction) if labeled_source else set()
        names_of = {int(k): v for k, v in dataset.info.get("labels", {}).items() if str(k).isdigit()}
        for case in tqdm(good, desc=f"loading {dataset.name}", disable=not progress, leave=False):
            if structures == "each" and case.label is not None:
                image, label_map = case.load_label_map()
                objects = [(f"{dataset.name}:{name}", label) for name, label in structures_of(label_map, labels, names_of)]
            else:
                image, label = case.load(labels)
                objects = [(dataset.name, np.zeros(image.shape, np.uint8) if label is None else label)]
            for group, label in objects:
                if case.name in held_out:
                    validation.append(TrainingCase(case.name, group, image, label))
                    continue
                if structures == "each":
                    on_grid, label = _on_training_grid(*_around_structure(image, label, min_working_voxels),
                                                       min_working_voxels)
                else:
                    on_grid, label = _on_training_grid(image, label, min_working_voxels)
                recorded = _recorded_clicks(case.clicks, on_grid) if case.clicks else None
                item = TrainingCase(case.name, group, on_grid, label, recorded_clicks=recorded)
                item.labeled = labeled_source and case.name in kept_labels
                if item.labeled or not labeled_source or rest_unlabeled:
                    train.append(item)
        record["datasets"].append({"name": dataset.name, "path": str(root), "cases": len(names),
                                   "skipped": problems,
                                   "validation": sorted(held_out), "labeled_source": labeled_source,
                                   "labeled_train": len(kept_labels),
                                   "unlabeled_train": (len(names) - len(held_out) - len(kept_labels))
                                   if (rest_unlabeled or not labeled_source) else 0})
    if not any(c.labeled for c in train):
        raise InputError("no labelled training case: give at least one --dataset with labels")
    return train, validation, record


def structures_of(label_map: np.ndarray, labels: tuple[int, ...] | None,
                  names: dict[int, str]) -> list[tuple[str, np.ndarray]]:
    """The objects of a label map, each (name, uint8 mask): every value of ``labels`` (default
    every non-zero value) with at least MIN_STRUCTURE_VOXELS voxels on its own, and, where there
    are several, their union when it holds every chosen value (every value ``names`` lists
    without ``labels``) and is one object (its largest connected part holds UNION_CONNECTED of
    it): the hippocampus's two halves are, three of seven neck organs that touch in one scan are
    not. Names come from ``names`` (dataset.json's labels), the union's joins them with "+"."""
    chosen = sorted(names) if labels is None else sorted(labels)
    values = [int(v) for v in np.unique(label_map) if v != 0 and (labels is None or v in labels)]
    found = [(v, binary_label(label_map, (v,))) for v in values]
    found = [(v, mask) for v, mask in found if np.count_nonzero(mask) >= MIN_STRUCTURE_VOXELS]
    out = [(names.get(v, str(v)), mask) for v, mask in found]
    if len(found) > 1 and [v for v, _ in found] == [v for v in chosen if v != 0]:
        union = binary_label(label_map, tuple(v for v, _ in found))
        components, count = ndimage.label(union)
        if count == 1 or np.bincount(components.ravel())[1:].max() >= UNION_CONNECTED * np.count_nonzero(union):
            out.append(("+".join(names.get(v, str(v)) for v, _ in found), union))
    return out


def _around_structure(image: Volume, label: np.ndarray, min_working_voxels: int | None) -> tuple[Volume, np.ndarray]:
    """The part of the case within STRUCTURE_CONTEXT working-grid voxels of the structure's box:
    all a training crop of it can reach, so that seven structures of one scan, each on its own
    enlarged grid, do not hold seven enlarged copies of the whole scan."""
    lo, hi = (np.array(kji_from_ijk(corner)) for corner in label_box(label, margin=EVAL_ROI_MARGIN))
    grid = working_grid(tuple(hi - lo), image.spacing_kji, None, min_working_voxels)
    margin = np.ceil(STRUCTURE_CONTEXT * (hi - lo) / np.array(grid.shape)).astype(int)
    lo, hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = image.index_to_world(ijk_from_kji(lo))
    return (Volume(image.array[box], image.spacing, tuple(origin), image.direction, image.name),
            np.ascontiguousarray(label[box]))


TRAINING_MAX_VOXELS = 64 * 1024**2  # per case held in memory


def _on_training_grid(image: Volume, label: np.ndarray,
                      min_working_voxels: int | None = None) -> tuple[Volume, np.ndarray]:
    """A training case on the grid the session would show the networks (working_grid.py): thick
    slices on near-isotropic voxels, and a case whose ROI (object box + margin, as a user draws
    it) holds fewer than ``min_working_voxels`` enlarged by the factor the session would use.
    Other cases stay as they are, bit for bit."""
    spacing = image.spacing_kji
    shape = np.array(working_grid(image.shape, spacing, TRAINING_MAX_VOXELS).shape)
    if min_working_voxels is not None and label.any():
        lo, hi = label_box(label)
        roi = np.subtract(kji_from_ijk(hi), kji_from_ijk(lo))
        enlarged = (np.array(working_grid(roi, spacing, None, min_working_voxels).shape)
                    / np.array(working_grid(roi, spacing, None).shape))
        if np.prod(shape * enlarged) <= TRAINING_MAX_VOXELS:
            shape = np.rint(shape * enlarged).astype(int)
    if tuple(shape) == image.shape:
        return image, label
    shape = tuple(int(v) for v in shape)
    resampled = resample_to_shape(image, shape)
    if image.array.dtype.kind in "iu":  # CT in HU stays whole HU, at half the memory of float32
        info = np.iinfo(image.array.dtype)
        resampled.array = np.clip(np.rint(resampled.array), info.min, info.max).astype(image.array.dtype)
    return resampled, resample_to_shape(image.with_array(label), shape, nearest=True).array


def _labeled_subset(names: list[str], fraction: float) -> set[str]:
    """The first ``fraction`` of a seeded order of the training cases keep their labels."""
    if fraction >= 1.0:
        return set(names)
    count = max(1, int(round(len(names) * fraction)))
    return set(np.random.default_rng(1).permutation(names)[:count].tolist())
