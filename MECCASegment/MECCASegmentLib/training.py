"""Training MECCA: pixel-wise advantage actor-critic with the confidence network alongside.

One step = one batch of episodes (two ROI crops of the same dataset, so oneDNN's fast kernels
apply), T rounds each, with the seeded simulated user clicking before every round (method.md).
Per round: sample actions, score them with C(s, a) and C(s, -a) (eqs. 2-3 with the symmetric
term), apply eq. 1, reward each voxel by eqs. 4-5 (c detached; c = 1 for IteR-MRL). After the
episode: discounted per-voxel returns, advantage A = R - V, and
L = -log pi * A - 0.01 entropy + 0.5 (R - V)^2 + L_C, averaged over voxels and rounds.

Unlabelled cases (paper eq. 6, Algorithm 1) alternate with labelled ones: their reward uses the
simulated labels from the confidence map, only where the confidence passes delta, and they do not
train C. Their clicks come from the simulated user, which reads the hidden label only to click.

Every random draw of a step derives from (seed, epoch, step), so a run killed at any point and
resumed from its last state file reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .checkpoint import load_model, load_training_state, save_model, save_training_state
from .environment import (
    MASK_TENTHS,
    START_TENTHS,
    action_tenths,
    build_state,
    confidence_targets,
    cross_entropy,
    normalize_image,
    oracle_actions,
    shaped_reward,
    simulated_labels,
    transition,
)
from .evaluation import label_box, method_for_model, simulate
from .hints import USER_STYLES, Click, SimulatedUser, encode_hints, read_clicks
from .io import InputError, MSDDataset, Volume, check_dataset, resample_to_shape, split_validation
from .networks import MeccaModel, NetworkConfig, native_bfloat16
from .synthetic import synthetic_object, thick_slices
from .working_grid import working_grid


@dataclass
class TrainingConfig:
    """Everything that determines a run (stored in its checkpoints)."""

    epochs: int = 30
    rounds: int = 5
    gamma: float = 0.95
    alpha: float = 0.8
    beta: float = 1.0
    learning_rate: float = 1e-4
    entropy_weight: float = 0.01
    confidence_reward: bool = True  # False = IteR-MRL ablation (c = 1 in the reward)
    clicks_per_round: tuple[int, int] = (1, 5)  # drawn per episode, inclusive
    user_styles: tuple[str, ...] = USER_STYLES  # the simulated user's click style, drawn per case and episode
    steps_per_round: tuple[int, int] = (1, 1)  # policy steps between two rounds of clicks, drawn per episode
    backward_steps: int = 2  # steps of each rollout that get a gradient (drawn per optimiser step)
    warm_start_epochs: float = 0.0  # first epochs: imitation of the oracle step only, no policy-gradient term
    bfloat16: bool = True  # rollouts in bfloat16 and gradients under bfloat16 autocast, where the device is native
    batch_size: int = 2  # cases per optimiser step and process ...
    cases_per_pass: int = 2  # ... run this many at a time, their gradients added up (memory is that of one pass)
    margin_range: tuple[int, int] = (-4, 24)  # voxels around the object, per side
    max_crop: int = 112
    mask_start_fraction: float = 0.2  # episodes starting from a perturbed existing segment
    invert_fraction: float = 0.2  # episodes with inverted image contrast (modality robustness)
    intensity_augmentation: float = 0.0  # episodes with a random gamma, bias field, blur and noise (augment_intensity)
    synthetic_fraction: float = 0.0  # labelled episodes on an object drawn from the scan (synthetic.py), not the label
    thick_slice_fraction: float = 0.0  # episodes whose crop looks as if made of 2-5x thicker slices (synthetic.thick_slices)
    unlabeled_delta: float = 0.8
    class_balance_epochs: float = 6.0  # foreground up-weighting fades from balanced ...
    class_balance_floor: float = 0.5  # ... to this strength (0 = plain mean; see class_weights)
    confidence_class_balance: float = 0.0  # foreground weighting of C's loss (class_weights strength; 0 = plain mean, method.md)
    confidence_only: bool = False  # train C alone, the policy kept as it is (recalibrating an existing model)
    imitation_weight: float = 1.0  # auxiliary cross-entropy towards the step to the label (see run_episode) ...
    imitation_epochs: float = 10.0  # ... fading to 0 over these epochs
    final_lr_fraction: float = 0.1  # cosine decay of the learning rate to this fraction at the last epoch
    grad_clip: float = 5.0
    validation_fraction: float = 0.2
    validation_cases_per_epoch: int = 12  # per dataset, for the per-epoch curve
    seed: int = 0

    def __post_init__(self):
        if not self.user_styles or set(self.user_styles) - set(USER_STYLES):
            raise ValueError(f"user_styles must name some of {', '.join(USER_STYLES)}, got {self.user_styles!r}")
        if self.backward_steps < 1:
            raise ValueError(f"backward_steps must be at least 1, got {self.backward_steps}")
        for name in ("synthetic_fraction", "thick_slice_fraction", "intensity_augmentation", "mask_start_fraction",
                     "invert_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# The schedule of a new model, and that of a fine-tuning (--init), which must not restart the
# from-scratch schedule: a high rate, balanced foreground weights and a strong imitation term
# undid the bundled model's training on a few cases of a new structure (docs/results.md,
# "Fine-tuning on a few cases").
NEW_MODEL = {"learning_rate": 5e-4, "class_balance_epochs": 6.0, "imitation_weight": 1.0, "imitation_epochs": 10.0}
FINE_TUNING = {"learning_rate": 1e-4, "class_balance_epochs": 0.0, "imitation_weight": 0.3, "imitation_epochs": 1000.0}


@dataclass
class TrainingCase:
    name: str
    dataset: str
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
            index = tuple(int(v) for v in np.rint(ijk)[::-1])
            if all(0 <= v < s for v, s in zip(index, image.shape)):
                out.setdefault(round_, []).append(Click(index, positive))
    if not out:
        raise InputError(f"{path}: no click lies inside its image")
    return out


def load_cases(dataset_dirs: list[str], labels: tuple[int, ...] | None, validation_fraction: float,
               unlabeled_dirs: list[str] = (), labeled_fraction: float = 1.0, progress: bool = True,
               skip_bad: bool = False, rest_unlabeled: bool = False, min_working_voxels: int | None = None):
    """Read datasets into memory; returns (train, validation, record of what was used).

    Training cases are put on the grid the session shows the networks (``_on_training_grid``, with
    the model's ``min_working_voxels``); validation cases stay as they are, since the session they
    are scored through resamples them itself, and their Dice is on the scan's own voxels.

    ``labeled_fraction`` keeps the labels of that fraction of each labelled dataset's training
    cases; the others are left out, or with ``rest_unlabeled`` take part as unlabelled cases (their
    label is then read only by the simulated user, to click).

    Every case is checked first: bad cases are reported together, and training stops unless
    ``skip_bad`` asks to go on with the good ones.
    """
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
        for case in tqdm(good, desc=f"loading {dataset.name}", disable=not progress, leave=False):
            image, label = case.load(labels)
            label = np.zeros(image.shape, np.uint8) if label is None else label
            if case.name in held_out:
                validation.append(TrainingCase(case.name, dataset.name, image, label))
                continue
            image, label = _on_training_grid(image, label, min_working_voxels)
            recorded = _recorded_clicks(case.clicks, image) if case.clicks else None
            item = TrainingCase(case.name, dataset.name, image, label, recorded_clicks=recorded)
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


TRAINING_MAX_VOXELS = 64 * 1024**2  # per case held in memory


def _on_training_grid(image: Volume, label: np.ndarray,
                      min_working_voxels: int | None = None) -> tuple[Volume, np.ndarray]:
    """A training case on the grid the session would show the networks (working_grid.py): thick
    slices on near-isotropic voxels, and a case whose ROI (object box + margin, as a user draws
    it) holds fewer than ``min_working_voxels`` enlarged by the factor the session would use.
    Other cases stay as they are, bit for bit."""
    spacing = image.spacing[::-1]
    shape = np.array(working_grid(image.shape, spacing, TRAINING_MAX_VOXELS).shape)
    if min_working_voxels is not None and label.any():
        lo, hi = label_box(label)
        roi = (np.array(hi) - np.array(lo))[::-1]
        enlarged = (np.array(working_grid(roi, spacing, None, min_working_voxels).shape)
                    / np.array(working_grid(roi, spacing, None).shape))
        if np.prod(shape * enlarged) <= TRAINING_MAX_VOXELS:
            shape = np.rint(shape * enlarged).astype(int)
    if tuple(shape) == image.shape:
        return image, label
    shape = tuple(int(v) for v in shape)
    return resample_to_shape(image, shape), resample_to_shape(image.with_array(label), shape, nearest=True).array


def _labeled_subset(names: list[str], fraction: float) -> set[str]:
    """The first ``fraction`` of a seeded order of the training cases keep their labels."""
    if fraction >= 1.0:
        return set(names)
    count = max(1, int(round(len(names) * fraction)))
    return set(np.random.default_rng(1).permutation(names)[:count].tolist())


# -- episode construction ----------------------------------------------------------------------
@dataclass
class EpisodeBatch:
    image: torch.Tensor  # (B, D, H, W) normalised
    label: torch.Tensor  # (B, D, H, W) uint8
    valid: torch.Tensor  # (B, D, H, W) bool: inside the image (crops may be padded)
    start: torch.Tensor  # (B, D, H, W) uint8 starting probability in tenths
    labeled: bool
    user_seeds: list[int] = field(default_factory=list)
    user_styles: list[str] = field(default_factory=list)
    recorded_clicks: list[dict[int, list[Click]] | None] = field(default_factory=list)  # in crop coordinates


def _object_box(label: np.ndarray, recorded_clicks: dict[int, list[Click]] | None):
    """The object's box: from the label, or from the recorded clicks of an unlabelled case."""
    points = np.argwhere(label > 0)
    if points.size == 0 and recorded_clicks:
        points = np.array([c.position for clicks in recorded_clicks.values() for c in clicks])
    if points.size == 0:
        centre = np.array(label.shape) // 2
        return centre, centre + 1
    return points.min(0), points.max(0) + 1


def _clicks_in_crop(recorded: dict[int, list[Click]] | None, lo, shape, order, flips):
    """Recorded clicks moved into a crop that starts at ``lo`` (size ``shape``) and is then
    transposed by ``order`` and flipped along ``flips`` (axes after the transpose)."""
    if recorded is None:
        return None
    moved: dict[int, list[Click]] = {}
    transposed_shape = [shape[axis] for axis in order]
    for round_, clicks in recorded.items():
        for click in clicks:
            local = [p - o for p, o in zip(click.position, lo)]
            if not all(0 <= v < s for v, s in zip(local, shape)):
                continue
            local = [local[axis] for axis in order]
            for axis in flips:
                local[axis] = transposed_shape[axis] - 1 - local[axis]
            moved.setdefault(round_, []).append(Click(tuple(int(v) for v in local), click.positive))
    return moved


def _crop(array: np.ndarray, lo, hi, fill) -> np.ndarray:
    """array[lo:hi], padded with ``fill`` where the box leaves the array."""
    out = np.full(tuple(int(h - low) for low, h in zip(lo, hi)), fill, dtype=array.dtype)
    src = tuple(slice(max(low, 0), min(h, s)) for low, h, s in zip(lo, hi, array.shape))
    dst = tuple(slice(max(low, 0) - low, min(h, s) - low) for low, h, s in zip(lo, hi, array.shape))
    out[dst] = array[src]
    return out


def _perturbed_mask(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect existing segment: the label grown, shrunk or shifted by 1-3 voxels."""
    radius = int(rng.integers(1, 4))
    kind = rng.integers(3)
    mask = label > 0
    if kind == 0:
        return ndimage.binary_dilation(mask, iterations=radius)
    if kind == 1:
        return ndimage.binary_erosion(mask, iterations=radius)
    return np.roll(mask, tuple(int(v) for v in rng.integers(-radius, radius + 1, 3)), axis=(0, 1, 2))


def augment_intensity(image: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The normalised crop as another scanner or sequence might show it: a random gamma (0.6-1.6), a
    smooth multiplicative bias field (a factor up to exp(+/-0.3) along each axis), a Gaussian blur
    (sigma up to 1 voxel) and Gaussian noise (up to 0.15 of the intensity spread), normalised again.

    Why: under such changes the bundled model loses 1-6 Dice points at round 5 on the held-out
    cases; one epoch with half the episodes augmented narrows that gap but lowers the Dice on the
    scans as they are (docs/results.md, "Intensity changes"), so it is off by default."""
    if not valid.any():
        return image
    inside = image[valid]
    low, high = inside.min(), inside.max()
    unit = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    unit = unit ** np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in image.shape], indexing="ij")
    unit = unit * np.exp(sum(rng.uniform(-0.3, 0.3) * axis for axis in axes))
    unit = ndimage.gaussian_filter(unit, rng.uniform(0.0, 1.0))
    unit = unit + rng.normal(0.0, rng.uniform(0.0, 0.15) * max(float(unit[valid].std()), 1e-6), unit.shape)
    out = np.zeros_like(image)
    out[valid] = normalize_image(unit[valid].astype(np.float32))
    return out


def _transform(array: np.ndarray, order, flips) -> np.ndarray:
    return np.flip(array.transpose(order), axis=flips)


def make_batch(cases: list[TrainingCase], config: TrainingConfig, rngs: list[np.random.Generator]) -> EpisodeBatch:
    """One random ROI crop per case (object box + random margins), transposed and flipped at
    random, padded to one shape.

    A labelled case's object is, in ``config.synthetic_fraction`` of the episodes, one drawn from
    its scan (synthetic.synthetic_object) instead of its label.

    Each case draws only from its own generator, so a case's episode does not depend on which
    other cases share its batch (what makes 2 processes x 2 cases equal 1 process x 4 cases).
    """
    plans, objects = [], []
    for case, rng in zip(cases, rngs):
        label = case.label
        if config.synthetic_fraction and case.labeled and rng.random() < config.synthetic_fraction:
            label = synthetic_object(normalize_image(case.image.array), case.label,
                                     np.random.default_rng(int(rng.integers(2**62)))).astype(np.uint8)
        objects.append(label)
        lo, hi = _object_box(label, case.recorded_clicks)
        lo = lo - rng.integers(config.margin_range[0], config.margin_range[1] + 1, 3)
        hi = hi + rng.integers(config.margin_range[0], config.margin_range[1] + 1, 3)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, case.label.shape)
        size = np.minimum(np.maximum(hi - lo, 8), config.max_crop)
        lo = np.minimum(lo + rng.integers(0, np.maximum(hi - lo - size, 0) + 1), np.maximum(case.label.shape - size, 0))
        order = rng.permutation(3).tolist()
        flips = [axis for axis in range(3) if rng.random() < 0.5]
        plans.append((lo, size, order, flips))
    shape = np.max([size[order] for _, size, order, _ in plans], axis=0)  # common shape after transposing
    images, labels, valids, starts, recorded = [], [], [], [], []
    for case, object_label, rng, (lo, size, order, flips) in zip(cases, objects, rngs, plans):
        need = shape[np.argsort(order)]  # the crop size that transposes to the common shape
        lo = lo - rng.integers(0, need - size + 1)  # more real context rather than padding where possible
        lo = np.clip(lo, np.minimum(case.label.shape - need, 0), np.maximum(case.label.shape - need, 0))
        hi = lo + need
        valid = _crop(np.ones(case.label.shape, bool), lo, hi, False)
        raw = _crop(case.image.array, lo, hi, 0)
        image = np.zeros(need, np.float32)
        image[valid] = normalize_image(raw[valid])
        label = _crop(object_label, lo, hi, 0)
        if case.labeled and rng.random() < config.mask_start_fraction:
            start = np.where(_perturbed_mask(label, rng) & valid, MASK_TENTHS[1], MASK_TENTHS[0]).astype(np.uint8)
        else:
            start = np.full(need, START_TENTHS, np.uint8)
        if config.intensity_augmentation and rng.random() < config.intensity_augmentation:
            image = augment_intensity(image, valid, rng)
        if config.thick_slice_fraction and rng.random() < config.thick_slice_fraction:
            image = thick_slices(image, valid, rng)
        if rng.random() < config.invert_fraction:
            image = -image
        image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        image[~valid] = 0.0
        for out, array in zip((images, labels, valids, starts), (image, label, valid, start)):
            out.append(_transform(array, order, flips))
        recorded.append(_clicks_in_crop(case.recorded_clicks, lo, need, order, flips))
    arrays = [np.ascontiguousarray(np.stack(a)) for a in (images, labels, valids, starts)]
    return EpisodeBatch(*(torch.from_numpy(a) for a in arrays), labeled=cases[0].labeled,
                        user_seeds=[int(rng.integers(0, 2**31)) for rng in rngs],
                        user_styles=[str(rng.choice(config.user_styles)) for rng in rngs], recorded_clicks=recorded)


# -- one episode ---------------------------------------------------------------------------------
def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over each volume's voxels, then the mean over the batch: every crop counts
    the same whatever its size (and a batch split across processes averages to the same loss)."""
    dims = tuple(range(1, values.dim()))
    return ((values * weights).sum(dim=dims) / weights.sum(dim=dims).clamp(min=1e-6)).mean()


def class_weights(mask: torch.Tensor, label: torch.Tensor, strength: float) -> torch.Tensor:
    """Voxel weights: foreground up-weighted by (n_background / n_foreground) ** strength.

    Objects fill a few percent of an ROI. With a plain mean (strength 0, method.md) the return is
    dominated by background: the policy first learns "everything is background", and later finds
    that pushing every voxel down in the first rounds, whatever it is, and discriminating only once
    clicks have piled up, pays (measured: Dice 0 after rounds 1-3, see docs/results.md). Fully
    balanced weights (strength 1) move the decision threshold far below p = 0.5 and over-segment.
    Training starts balanced and settles at TrainingConfig.class_balance_floor (0.5: foreground
    weighted by the square root of the background/foreground ratio).
    """
    if strength <= 0:
        return mask
    dims = tuple(range(1, mask.dim()))
    fg = mask * label.float()
    ratio = ((mask - fg).sum(dim=dims, keepdim=True) / fg.sum(dim=dims, keepdim=True).clamp(min=1.0)).clamp(min=1.0)
    weights = mask + fg * (ratio ** strength - 1.0)
    return weights * mask.sum(dim=dims, keepdim=True) / weights.sum(dim=dims, keepdim=True).clamp(min=1e-6)


def _users_and_clicks(batch: EpisodeBatch):
    users = [SimulatedUser(batch.label[b].numpy() & batch.valid[b].numpy(), seed=s, style=style)
             for b, (s, style) in enumerate(zip(batch.user_seeds, batch.user_styles))]
    return users, [[] for _ in users]


def _hint_encoder(model: MeccaModel, batch: EpisodeBatch):
    """clicks of each volume -> (B, D, H, W) hint maps, as the model's sessions will make them."""
    images = batch.image.numpy()
    return lambda clicks: torch.from_numpy(np.stack([encode_hints(model.config.hint_encoding, image, c)
                                                     for image, c in zip(images, clicks)]))


def _add_round_clicks(batch: EpisodeBatch, users, clicks, prediction: np.ndarray, count: int, t: int) -> None:
    """This round's clicks of each volume: replayed from a recording, or from the simulated user."""
    for b, user in enumerate(users):
        recorded = batch.recorded_clicks[b] if batch.recorded_clicks else None
        clicks[b].extend(recorded.get(t + 1, []) if recorded is not None else user.clicks(prediction[b], count, t))


def _gumbel(shape, generators: list[torch.Generator], device) -> torch.Tensor:
    """Gumbel noise, each volume from its own generator (sampling = argmax(logits + noise))."""
    uniform = torch.stack([torch.rand(shape[1:], generator=g) for g in generators]).clamp_(1e-10, 1.0 - 1e-7)
    return (-torch.log(-torch.log(uniform))).to(device)


@dataclass
class StepRecord:
    """One policy step of a rollout, kept to recompute its forward pass with gradients."""

    index: int  # step within the episode
    p: torch.Tensor  # (B, D, H, W) uint8 tenths before the step
    hint: torch.Tensor  # (B, D, H, W)
    action: torch.Tensor  # (B, D, H, W) index into A, sampled
    returns: torch.Tensor  # (B, D, H, W) discounted return from this step on
    target: torch.Tensor  # (B, D, H, W) the label, or eq. 6's simulated label for an unlabelled case
    reward_mask: torch.Tensor  # (B, D, H, W) voxels that count (inside the image; confident enough, eq. 6)


@dataclass
class Rollout:
    batch: EpisodeBatch
    steps: list[StepRecord]  # the steps chosen for a gradient
    stats: dict


def _inference_copy(model: MeccaModel, bfloat16: bool) -> MeccaModel:
    """The networks as a rollout runs them: a bfloat16 copy where the device computes bfloat16
    natively (2-3x faster than float32 on such CPUs; autocast does not reach the oneDNN kernels
    that no-grad convolutions use), else the model itself."""
    if not bfloat16 or not native_bfloat16(model.device):
        return model
    twin = copy.deepcopy(model)
    for net in twin.networks.values():
        net.to(dtype=torch.bfloat16)
    return twin


@torch.no_grad()
def rollout(model: MeccaModel, batch: EpisodeBatch, config: TrainingConfig, clicks_per_round: int,
            generators: list[torch.Generator], steps_per_round: int = 1, chosen: list[int] | None = None,
            reinforce: bool = True) -> Rollout:
    """Play T rounds of ``steps_per_round`` policy steps with sampled actions and no gradients;
    keep the ``chosen`` steps (default: all) with their discounted per-voxel returns (eq. 2).

    The seeded simulated user clicks before every round, from the mask as it stands. Rewards are
    eqs. 4-5 (c = 1 without ``reinforce`` or for IteR-MRL, so C is not run); for an unlabelled case
    the target is eq. 6's simulated label, only where C is confident beyond delta. Keeping only
    the chosen steps and recomputing their forward pass with gradients (``step_loss``) bounds the
    memory to one step's activations, whatever the episode's length.
    """
    device = model.device
    fast = _inference_copy(model, config.bfloat16)
    dtype = next(fast.policy.parameters()).dtype
    label = batch.label.to(device).bool()
    valid = batch.valid.to(device).float()
    image = batch.image.to(device)
    users, clicks = _users_and_clicks(batch)
    hints = _hint_encoder(model, batch)
    p = batch.start.to(device)
    steps = config.rounds * steps_per_round
    chosen = set(range(steps) if chosen is None else chosen)
    kept, rewards = [], []
    shaped = reinforce and config.confidence_reward
    for t in range(steps):
        if t % steps_per_round == 0:
            _add_round_clicks(batch, users, clicks, ((p > 5) & (valid > 0)).cpu().numpy(), clicks_per_round,
                              t // steps_per_round)
            hint = hints(clicks).to(device)
        state = build_state(image, p, hint).to(dtype).contiguous(memory_format=torch.channels_last_3d)
        logits, _ = fast.policy(state, with_value=False)
        action = (logits.float() + _gumbel(logits.shape, generators, device)).argmax(dim=1)
        step = action_tenths(action)
        confidence = None
        if shaped or not batch.labeled:
            confidence = torch.sigmoid(fast.confidence(state, (step.float() / 10.0).to(dtype)).float())
        if batch.labeled:
            target, reward_mask = label.float(), valid
        else:
            target, trusted = simulated_labels(step, confidence, config.unlabeled_delta)
            reward_mask = trusted.float() * valid
        p_next = transition(p, step)
        reward = shaped_reward(cross_entropy(p.float() / 10, target), cross_entropy(p_next.float() / 10, target),
                               confidence if shaped else None, config.alpha, config.beta)
        rewards.append(reward * reward_mask)
        if t in chosen:
            kept.append(StepRecord(t, p, hint, action, None, target, reward_mask))
        p = p_next
    returns, ret = {}, torch.zeros_like(rewards[0])
    for t in reversed(range(steps)):
        ret = rewards[t] + config.gamma * ret
        if t in chosen:
            returns[t] = ret
    for record in kept:
        record.returns = returns[record.index]
    final = (p > 5) & (valid > 0)
    stats = {"reward": float(sum(_masked_mean(r, valid).item() for r in rewards)),
             "dice": _batch_dice(final, label & (valid > 0))}
    return Rollout(batch, kept, stats)


def step_loss(model: MeccaModel, run: Rollout, record: StepRecord, config: TrainingConfig, balance: float = 0.0,
              imitation: float = 0.0, reinforce: bool = True) -> tuple[torch.Tensor, dict]:
    """One kept step's loss, with gradients: the actor-critic terms (eqs. 2-5: -log pi(a|s) A - 0.01
    entropy + 0.5 (R - V)^2, A = R - V; the policy term only with ``reinforce``), C's symmetric loss
    (eq. 3, labelled cases), and ``imitation`` x the cross-entropy towards the oracle step
    (environment.oracle_actions), weighted by ``class_weights`` of strength ``balance``.

    The imitation term is the warm start (as in DQfD or AlphaStar's supervised regulariser): it
    teaches the policy to segment from the image and to follow clicks on the states its own
    rollouts reach (as DAgger does), one supervised pass per kept step.
    """
    batch, device = run.batch, model.device
    label = batch.label.to(device).bool()
    valid = batch.valid.to(device).float()
    p = record.p.to(device)
    state = build_state(batch.image.to(device), p, record.hint.to(device)).contiguous(memory_format=torch.channels_last_3d)
    action = record.action.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=config.bfloat16 and native_bfloat16(device))
    with autocast:
        logits, value = model.policy(state)
    log_pi = F.log_softmax(logits.float(), dim=1)
    weights = class_weights(record.reward_mask.to(device), record.target.to(device), balance)
    advantage = record.returns.to(device) - value.float().squeeze(1)
    value_loss = _masked_mean(0.5 * advantage.pow(2), weights)
    entropy = -(log_pi.exp() * log_pi).sum(dim=1)
    policy_loss = _masked_mean(-log_pi.gather(1, action.unsqueeze(1)).squeeze(1) * advantage.detach()
                               - config.entropy_weight * entropy, weights) if reinforce else torch.zeros((), device=device)
    confidence_loss = imitation_loss = torch.zeros((), device=device)
    stats = {}
    if batch.labeled:
        step_values = action_tenths(action).float() / 10.0
        with autocast:
            both = model.confidence(torch.cat([state, state]), torch.cat([step_values, -step_values]))
        conf_logit, conf_logit_flipped = both.float()[: len(action)], both.float()[len(action):]
        target = confidence_targets(action_tenths(action), label)
        # a plain voxel mean by default; foreground weighting makes C vouch for upward steps (eq. 6
        # then yields foreground labels) but ranked right and wrong steps worse (docs/results.md)
        confidence_loss = _masked_mean(
            F.binary_cross_entropy_with_logits(conf_logit, target, reduction="none")
            + F.binary_cross_entropy_with_logits(conf_logit_flipped, 1.0 - target, reduction="none"),
            class_weights(valid, label, config.confidence_class_balance))
        stats["confidence_accuracy"] = _masked_mean(((conf_logit > 0).float() == target).float(), valid).item()
        if imitation > 0:
            oracle = oracle_actions(p, label)
            imitation_loss = _masked_mean(-log_pi.gather(1, oracle.unsqueeze(1)).squeeze(1),
                                          class_weights(valid, label.float(), balance))
            stats["oracle_agreement"] = _masked_mean((logits.detach().argmax(dim=1) == oracle).float(), valid).item()
    total = policy_loss + value_loss + confidence_loss + imitation * imitation_loss
    stats.update({"loss": total.item(), "policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "confidence_loss": confidence_loss.item(), "imitation_loss": imitation_loss.item()})
    return total, stats


def run_supervised_episode(model: MeccaModel, batch: EpisodeBatch, config: TrainingConfig, clicks_per_round: int,
                           balance: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The click-CNN baseline: same rounds and simulated user, cross-entropy on each round's
    prediction, which becomes the next round's probability channel (InterCNN's iteration)."""
    device = next(model.policy.parameters()).device
    label = batch.label.to(device).bool()
    valid = batch.valid.to(device).float()
    image = batch.image.to(device)
    users, clicks = _users_and_clicks(batch)
    hints = _hint_encoder(model, batch)
    probability = batch.start.to(device).float() / 10.0
    weights = class_weights(valid, label.float(), balance)
    loss = torch.zeros((), device=device)
    for t in range(config.rounds):
        _add_round_clicks(batch, users, clicks, ((probability > 0.5) & (valid > 0)).cpu().numpy(), clicks_per_round, t)
        hint = hints(clicks).to(device)
        state = build_state(image, probability, hint).contiguous(memory_format=torch.channels_last_3d)
        logit = model.policy(state)
        loss = loss + _masked_mean(F.binary_cross_entropy_with_logits(logit, label.float(), reduction="none"), weights)
        probability = torch.sigmoid(logit.detach())
    total = loss / config.rounds
    return total, {"loss": total.item(), "dice": _batch_dice((probability > 0.5) & (valid > 0), label & (valid > 0))}


def _batch_dice(prediction: torch.Tensor, label: torch.Tensor) -> float:
    inter = (prediction & label).sum().item()
    total = prediction.sum().item() + label.sum().item()
    return 1.0 if total == 0 else 2.0 * inter / total


# -- the run -------------------------------------------------------------------------------------
def epoch_batches(train: list[TrainingCase], config: TrainingConfig, epoch: int) -> list[list[int]]:
    """This epoch's batches: same-dataset groups of case indices in a seeded order. With unlabelled
    cases, each labelled batch is followed by one unlabelled batch (Algorithm 1), the unlabelled
    cases taking turns from epoch to epoch."""
    rng = np.random.default_rng([config.seed, epoch, 7])
    groups: dict[tuple[str, bool], list[int]] = {}
    for index, case in enumerate(train):
        groups.setdefault((case.dataset, case.labeled), []).append(index)
    labeled, unlabeled = [], []
    for (_, is_labeled), indices in sorted(groups.items()):
        shuffled = rng.permutation(indices).tolist()
        chunks = [shuffled[i:i + config.batch_size] for i in range(0, len(shuffled), config.batch_size)]
        (labeled if is_labeled else unlabeled).extend(chunks)
    labeled = [labeled[i] for i in rng.permutation(len(labeled))]
    if not unlabeled:
        return labeled
    unlabeled = [unlabeled[i] for i in rng.permutation(len(unlabeled))]
    return [batch for pair in zip(labeled, unlabeled * (len(labeled) // len(unlabeled) + 1)) for batch in pair]


def validate(model: MeccaModel, cases: list[TrainingCase], rounds: int = 5, clicks_per_round: int = 3,
             progress: bool = False) -> dict:
    """Mean Dice per round per dataset under the simulated user, through InteractiveSession with its
    default (automatic) steps per round: what a user of the model gets."""
    per_dataset: dict[str, list[list[float]]] = {}
    for case in tqdm(cases, desc="validation", disable=not progress, leave=False):
        run = simulate(method_for_model(model), case.image, case.label, rounds, clicks_per_round, seed=0)
        per_dataset.setdefault(case.dataset, []).append(run.dice)
    return {name: {"cases": len(d), "dice_mean_per_round": np.mean(d, axis=0).round(4).tolist(),
                   "dice_sd_per_round": np.std(d, axis=0).round(4).tolist()} for name, d in per_dataset.items()}


def _validation_subset(validation: list[TrainingCase], per_dataset: int) -> list[TrainingCase]:
    chosen, seen = [], {}
    for case in sorted(validation, key=lambda c: (c.dataset, c.name)):
        if seen.get(case.dataset, 0) < per_dataset:
            chosen.append(case)
            seen[case.dataset] = seen.get(case.dataset, 0) + 1
    return chosen


class Episode(nn.Module):
    """The loss of one kept rollout step (or of a click-CNN episode) as a module, so that
    DistributedDataParallel sees each forward with its backward."""

    def __init__(self, model: MeccaModel):
        super().__init__()
        self.model = model
        self.policy, self.confidence = model.policy, model.confidence  # registered: DDP syncs their gradients

    def forward(self, work, config: TrainingConfig, clicks: int, balance: float, imitation: float, reinforce: bool):
        if isinstance(work, EpisodeBatch):
            return run_supervised_episode(self.model, work, config, clicks, balance)
        run, record = work
        return step_loss(self.model, run, record, config, balance, imitation, reinforce)


def distributed_context() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun (NCCL on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Runs (or resumes) a training run; state and log live in ``<out>.run/`` beside the output.

    Under torchrun each process takes its share of every step's batch (DistributedSampler over
    the batch's cases); DistributedDataParallel averages the gradients, so N processes with
    ``batch_size`` cases each train like one process with N x ``batch_size``. Rank 0 alone logs,
    validates and writes files.
    """

    def __init__(self, out: str | os.PathLike, config: TrainingConfig, train: list[TrainingCase],
                 validation: list[TrainingCase], record: dict, network: NetworkConfig | None = None,
                 init: str | None = None, device: str = "cpu", command: str = "", progress: bool = True,
                 json_progress: bool = False):
        self.out = Path(out)
        self.run_dir = self.out.with_name(self.out.name.split(".")[0] + ".run")
        self.config, self.train, self.validation, self.record = config, train, validation, record
        self.rank, self.world = distributed_context()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.json_progress = json_progress and self.rank == 0  # one JSON line per step on stdout
        self.progress = progress and not json_progress and self.rank == 0
        self.command = command
        if init:
            self.model = load_model(init)
            self.record["init"] = str(init)
            if network is not None:  # the working grid and hints may change when fine-tuning; the weights fit either way
                self.model.config = replace(self.model.config, min_working_voxels=network.min_working_voxels,
                                            hint_encoding=network.hint_encoding)
                if network.fusion_out_channels != self.model.config.fusion_out_channels:
                    self.model = self.model.with_fusion_width(network.fusion_out_channels, config.seed)
        else:
            self.model = MeccaModel.create(network or NetworkConfig(), seed=config.seed)
        self.model.to(self.device, memory_format=torch.channels_last_3d).train()
        if config.confidence_only:
            if init is None or self.model.confidence is None:
                raise InputError("training the confidence network alone needs an existing MECCA model (--init)")
            self.model.policy.requires_grad_(False)  # before DDP: it reduces only trained parameters
        self.episode = Episode(self.model)
        if self.world > 1:
            unused = any(not c.labeled for c in train)  # unlabelled steps do not train C
            self.episode = nn.parallel.DistributedDataParallel(
                self.episode, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused)
        trained = [q for q in self.model.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.learning_rate)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self._resumed_at = (0, 0.0)  # steps and seconds done before this process started (for the ETA)
        self.history: list[dict] = []

    @property
    def state_path(self) -> Path:
        return self.run_dir / "last.safetensors"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.jsonl"

    def epoch_model_path(self, epoch: int) -> Path:
        """The inference model as it was after ``epoch`` (1-based), with that epoch's validation."""
        return self.run_dir / f"epoch-{epoch}.safetensors"

    def _record(self, metrics: dict, cases: str) -> dict:
        """A model file's record: the run so far and its validation ``metrics`` on ``cases``."""
        meta = self._metadata()
        meta["training"]["wall_time_s"] = round(self.elapsed, 1)
        meta["metrics"] = {"validation": metrics, "protocol": f"{cases}; simulated user, 3 clicks per round, 5 rounds, "
                                                              "automatic policy steps per round (the session's "
                                                              "default), ROI = object box + 8 voxels"}
        return meta

    def _metadata(self) -> dict:
        return {"training": {"config": asdict(self.config), "data": self.record, "command": self.command,
                             "machine": f"{platform.node()} {platform.machine()} {platform.processor()} "
                                        f"torch {torch.__version__} threads {torch.get_num_threads()}",
                             "device": str(self.device), "processes": self.world, "history": self.history}}

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's steps: each holds batch_size cases per process."""
        return epoch_batches(self.train, replace(self.config, batch_size=self.config.batch_size * self.world), epoch)

    def resume(self) -> bool:
        """Continue from ``<out>.run/last.safetensors`` when it exists; True if it did."""
        if not self.state_path.exists():
            return False
        meta = load_training_state(self.state_path, self.model, self.optimizer)
        saved = TrainingConfig.from_dict(meta["training"]["config"])
        if replace(saved, epochs=self.config.epochs) != self.config:
            raise InputError(f"{self.state_path}: the saved run used other settings; give the same options "
                             "(only --epochs may change), or another --out to start a new run")
        progress = meta["training_state"]["progress"]
        self.epoch, self.step, self.elapsed = progress["epoch"], progress["step"], progress["elapsed"]
        self.history = meta["training"].get("history", [])
        self._resumed_at = (self.epoch * len(self.batches(self.epoch)) + self.step, self.elapsed)
        return True

    def _save_state(self) -> None:
        if self.rank == 0:
            save_training_state(self.state_path, self.model, self.optimizer,
                                {"epoch": self.epoch, "step": self.step, "elapsed": self.elapsed}, self._metadata())
        if self.world > 1:
            dist.barrier()

    def schedule(self, epoch: int) -> tuple[float, float, bool]:
        """(class-balance strength, imitation weight, whether the policy-gradient term is on) of an
        epoch: during the warm start the policy imitates the oracle step alone (weight 1)."""
        c = self.config
        fade = max(0.0, 1.0 - epoch / c.class_balance_epochs) if c.class_balance_epochs else 0.0
        balance = c.class_balance_floor + (1.0 - c.class_balance_floor) * fade
        if epoch < c.warm_start_epochs:
            return balance, 1.0, False
        imitation = c.imitation_weight * max(0.0, 1.0 - epoch / c.imitation_epochs) if c.imitation_epochs else 0.0
        return balance, imitation, True

    def learning_rate(self, epoch: int) -> float:
        """Cosine decay from the configured rate to final_lr_fraction of it over the run."""
        c = self.config
        progress = epoch / max(c.epochs - 1, 1)
        return c.learning_rate * (c.final_lr_fraction
                                  + (1 - c.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _emit(self, event: str, **fields) -> None:
        if self.json_progress:
            print(json.dumps({"event": event, **fields}), flush=True)

    def train_step(self, batch_cases: list[int]) -> tuple[dict, bool]:
        """One optimiser step on this process's share of a step's cases; (statistics, labelled).

        Each pass of cases plays its rollout without gradients, then each kept step's loss is
        backpropagated on its own (memory: one step of one pass); the gradients add up, and
        DistributedDataParallel averages them across processes at the step's last backward."""
        config = self.config
        step_rng = np.random.default_rng([config.seed, self.epoch, self.step])
        clicks = int(step_rng.integers(config.clicks_per_round[0], config.clicks_per_round[1] + 1))
        steps = int(step_rng.integers(config.steps_per_round[0], config.steps_per_round[1] + 1))
        episode_steps = config.rounds * steps
        chosen = sorted(step_rng.choice(episode_steps, min(config.backward_steps, episode_steps), replace=False).tolist())
        balance, imitation, reinforce = self.schedule(self.epoch)
        mine = list(DistributedSampler(batch_cases, num_replicas=self.world, rank=self.rank, shuffle=False))
        passes = [mine[i:i + config.cases_per_pass] for i in range(0, len(mine), config.cases_per_pass)]
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for index, positions in enumerate(passes):
            # each case's crop, clicks and sampled actions come from its own seeds, so a step is the same
            # cases and episodes however its passes split them; each pass weighs by its share of the cases
            rngs = [np.random.default_rng([config.seed, self.epoch, self.step, position]) for position in positions]
            generators = [torch.Generator().manual_seed(int(np.random.default_rng(
                [config.seed, self.epoch, self.step, position, 1]).integers(2**62))) for position in positions]
            batch = make_batch([self.train[batch_cases[position]] for position in positions], config, rngs)
            share = len(positions) / len(mine)
            if self.model.config.model == "click-cnn":
                work, stats = [batch], {}
            else:
                run = rollout(self.model, batch, config, clicks, generators, steps, chosen, reinforce)
                work, stats = [(run, record) for record in run.steps], dict(run.stats)
            for number, item in enumerate(work):
                last = index == len(passes) - 1 and number == len(work) - 1
                with self.episode.no_sync() if self.world > 1 and not last else contextlib.nullcontext():
                    loss, step_stats = self.episode(item, config, clicks, balance, imitation, reinforce)
                    (loss * share / len(work)).backward()
                for key, value in step_stats.items():
                    stats[key] = stats.get(key, 0.0) + value / len(work)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + share * value
        torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), config.grad_clip)
        self.optimizer.step()
        return totals, batch.labeled

    def fit(self, save_every_s: float = 300.0) -> Path:
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        monitor = _validation_subset(self.validation, config.validation_cases_per_epoch)
        last_save = time.monotonic()
        while self.epoch < config.epochs:
            batches = self.batches(self.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.epoch)
            totals: dict[str, list[float]] = {}
            started = time.monotonic()
            bar = tqdm(total=len(batches), initial=self.step, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                       disable=not self.progress, dynamic_ncols=True)
            while self.step < len(batches):
                stats, labeled = self.train_step(batches[self.step])
                for key, value in stats.items():
                    totals.setdefault(f"{'labeled' if labeled else 'unlabeled'}_{key}", []).append(value)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", dice=f"{stats['dice']:.3f}", refresh=False)
                if self.json_progress:
                    done = self.epoch * len(batches) + self.step
                    spent = self.elapsed + time.monotonic() - started
                    steps_before, seconds_before = self._resumed_at
                    self._emit("step", epoch=self.epoch + 1, epochs=config.epochs, step=self.step,
                               steps=len(batches), elapsed_s=round(spent, 1),
                               eta_s=round((spent - seconds_before) / max(done - steps_before, 1)
                                           * (config.epochs * len(batches) - done), 1),
                               loss=round(stats["loss"], 5), dice=round(stats["dice"], 4),
                               peak_memory_mb=peak_memory_mb())
                if time.monotonic() - last_save > save_every_s:
                    self.elapsed += time.monotonic() - started
                    started = time.monotonic()
                    self._save_state()
                    last_save = time.monotonic()
            bar.close()
            self.elapsed += time.monotonic() - started
            if self.rank == 0:
                self._end_epoch(monitor, totals)
            self.epoch += 1
            self.step = 0
            self._save_state()
            last_save = time.monotonic()
        return self.finish()

    def _end_epoch(self, monitor: list[TrainingCase], totals: dict[str, list[float]]) -> None:
        self.model.eval()
        metrics = validate(self.model, monitor) if monitor else {}
        self.model.train()
        balance, imitation, reinforce = self.schedule(self.epoch)
        entry = {"epoch": self.epoch + 1, "elapsed_s": round(self.elapsed, 1),
                 "learning_rate": self.learning_rate(self.epoch), "class_balance": balance, "imitation": imitation,
                 "policy_gradient": reinforce,
                 **{k: round(float(np.mean(v)), 5) for k, v in totals.items()}, "validation": metrics}
        self.history.append(entry)
        with open(self.log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")
        # every epoch's model is kept (about 2 MB each): the per-epoch curve of an RL run is noisy and its
        # best epoch is not always the last (docs/results.md, "Rounds of several steps in training")
        save_model(self.model, self.epoch_model_path(self.epoch + 1),
                   self._record(metrics, f"first {self.config.validation_cases_per_epoch} held-out cases per dataset"))
        if self.progress:
            summary = ", ".join(f"{n} dice/round {m['dice_mean_per_round']}" for n, m in metrics.items())
            tqdm.write(f"epoch {self.epoch + 1}: {summary}")
        self._emit("epoch", **entry)

    def finish(self) -> Path:
        """Write the inference model with its record (full validation of the held-out split); rank 0."""
        if self.rank != 0:
            return self.out
        self.model.eval()
        metrics = validate(self.model, self.validation, progress=self.progress) if self.validation else {}
        self.model.to(memory_format=torch.contiguous_format)
        path = save_model(self.model.to("cpu"), self.out, self._record(metrics, "every held-out case"))
        self._emit("done", model=str(path), validation=metrics)
        return path


def peak_memory_mb() -> float | None:
    """This process's peak resident memory so far (MB; None where the system does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2  # Linux reports KiB, macOS bytes
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
