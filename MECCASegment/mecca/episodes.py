"""Episodes of training (paper eqs. 1-5 and 6): a batch of random ROI crops, a rollout of T rounds
under the seeded simulated user without gradients, and the loss of each kept step recomputed with
gradients (so memory is that of one step, whatever the episode's length).

Per step: sample actions, score them with C(s, a) and C(s, -a) (eqs. 2-3 with the symmetric term),
apply eq. 1, reward each voxel by eqs. 4-5 (c detached; c = 1 for IteR-MRL; near the label's surface
weighted up for BS-IRIS). From the kept steps:
discounted per-voxel returns, advantage A = R - V, and L = -log pi * A - 0.01 entropy +
0.5 (R - V)^2 + L_C + the imitation of the oracle step.

Unlabelled cases (eq. 6) use the simulated labels from the confidence map, only where the
confidence passes delta, and do not train C; their clicks come from the simulated user, which
reads the hidden label only to click.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .cases import TrainingCase
from .clicks import Click
from .cpu_kernels import native_bfloat16
from .environment import (
    MASK_TENTHS,
    START_TENTHS,
    action_tenths,
    boundary_weights,
    build_state,
    confidence_targets,
    cross_entropy,
    normalize_image,
    oracle_actions,
    shaped_reward,
    simulated_labels,
    transition,
)
from .hints import encode_hints
from .networks import ImageFeatures, MeccaModel
from .recipe import TrainingConfig
from .synthetic import synthetic_object, thick_slices
from .users import SimulatedUser


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
    scans as they are (research/NOTEBOOK.md, "Intensity changes"), so it is off by default."""
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


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over each volume's voxels, then the mean over the batch: every crop counts
    the same whatever its size (and a batch split across processes averages to the same loss)."""
    dims = tuple(range(1, values.dim()))
    return ((values * weights).sum(dim=dims) / weights.sum(dim=dims).clamp(min=1e-6)).mean()


def class_weights(mask: torch.Tensor, label: torch.Tensor, strength: float) -> torch.Tensor:
    """Voxel weights: foreground up-weighted by (n_background / n_foreground) ** strength.

    Objects fill a few percent of an ROI. With a plain mean (strength 0, method.md) the return is
    dominated by background: the policy first learns "everything is background", and later finds
    that pushing every voxel down in the first rounds, whatever it is, and discriminating only once
    clicks have piled up, pays (measured: Dice 0 after rounds 1-3, see research/NOTEBOOK.md). Fully
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
    """Gumbel noise, each volume from its own generator (sampling = argmax(logits + noise)), drawn
    where the generators live (the training device) and transformed in place: drawing it on the
    CPU and copying it over took most of a GPU step, and the out-of-place version 1-4 s per policy
    step for 8 left-atrium crops on a 2-core CPU, against 0.25 s now (docs/performance.md)."""
    noise = torch.empty(shape, device=device)
    for volume, generator in zip(noise, generators):
        volume.uniform_(generator=generator)
    return noise.clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_().neg_()


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
    features = fast.image_features(image.to(dtype))  # once per episode (split architecture)
    p = batch.start.to(device)
    steps = config.rounds * steps_per_round
    chosen = set(range(steps) if chosen is None else chosen)
    kept, rewards = [], []
    shaped = reinforce and config.confidence_reward
    boundary = None
    if config.boundary_reward and batch.labeled:
        weights = np.stack([boundary_weights(case) for case in batch.label.numpy()])
        boundary = 1.0 + config.boundary_reward * torch.from_numpy(weights).to(device)
    for t in range(steps):
        if t % steps_per_round == 0:
            _add_round_clicks(batch, users, clicks, ((p > 5) & (valid > 0)).cpu().numpy(), clicks_per_round,
                              t // steps_per_round)
            hint = hints(clicks).to(device)
        state = build_state(image, p, hint).to(dtype).contiguous(memory_format=torch.channels_last_3d)
        logits, _ = fast.policy_outputs(state, features, with_value=False)
        action = (logits.float() + _gumbel(logits.shape, generators, device)).argmax(dim=1)
        step = action_tenths(action)
        confidence = None
        if shaped or not batch.labeled:
            confidence = torch.sigmoid(fast.confidence_logits(state, (step.float() / 10.0).to(dtype), features).float())
        if batch.labeled:
            target, reward_mask = label.float(), valid
        else:
            target, trusted = simulated_labels(step, confidence, config.unlabeled_delta)
            reward_mask = trusted.float() * valid
        p_next = transition(p, step)
        reward = shaped_reward(cross_entropy(p.float() / 10, target), cross_entropy(p_next.float() / 10, target),
                               confidence if shaped else None, config.alpha, config.beta)
        if boundary is not None:
            reward = reward * boundary
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
    stats = {"reward": float(sum(masked_mean(r, valid) for r in rewards)),
             "dice": batch_dice(final, label & (valid > 0))}
    return Rollout(batch, kept, stats)


def step_loss(model: MeccaModel, run: Rollout, record: StepRecord, config: TrainingConfig, balance: float = 0.0,
              imitation: float = 0.0, reinforce: bool = True,
              features: ImageFeatures | None = None) -> tuple[torch.Tensor, dict]:
    """One kept step's loss, with gradients: the actor-critic terms (eqs. 2-5: -log pi(a|s) A - 0.01
    entropy + 0.5 (R - V)^2, A = R - V; the policy term only with ``reinforce``), C's symmetric loss
    (eq. 3, labelled cases), and ``imitation`` x the cross-entropy towards the oracle step
    (environment.oracle_actions), weighted by ``class_weights`` of strength ``balance``.

    The imitation term is the warm start (as in DQfD or AlphaStar's supervised regulariser): it
    teaches the policy to segment from the image and to follow clicks on the states its own
    rollouts reach (as DAgger does), one supervised pass per kept step.

    ``features``: the episode's ``image_features`` with gradients (split architecture), shared by
    its kept steps so that the encoder runs forward and backward once per episode.
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
        logits, value = model.policy_outputs(state, features)
    log_pi = F.log_softmax(logits.float(), dim=1)
    weights = class_weights(record.reward_mask.to(device), record.target.to(device), balance)
    advantage = record.returns.to(device) - value.float().squeeze(1)
    value_loss = masked_mean(0.5 * advantage.pow(2), weights)
    entropy = -(log_pi.exp() * log_pi).sum(dim=1)
    policy_loss = masked_mean(-log_pi.gather(1, action.unsqueeze(1)).squeeze(1) * advantage.detach()
                               - config.entropy_weight * entropy, weights) if reinforce else torch.zeros((), device=device)
    confidence_loss = imitation_loss = torch.zeros((), device=device)
    stats = {}
    if batch.labeled:
        step_values = action_tenths(action).float() / 10.0
        with autocast:
            conf_logit, conf_logit_flipped = model.confidence_pair(state, step_values, features)
        conf_logit, conf_logit_flipped = conf_logit.float(), conf_logit_flipped.float()
        target = confidence_targets(action_tenths(action), label)
        # a plain voxel mean by default; foreground weighting makes C vouch for upward steps (eq. 6
        # then yields foreground labels) but ranked right and wrong steps worse (research/NOTEBOOK.md)
        confidence_loss = masked_mean(
            F.binary_cross_entropy_with_logits(conf_logit, target, reduction="none")
            + F.binary_cross_entropy_with_logits(conf_logit_flipped, 1.0 - target, reduction="none"),
            class_weights(valid, label, config.confidence_class_balance))
        stats["confidence_accuracy"] = masked_mean(((conf_logit > 0).float() == target).float(), valid).item()
        if imitation > 0:
            oracle = oracle_actions(p, label, config.imitation_target)
            imitation_loss = masked_mean(-log_pi.gather(1, oracle.unsqueeze(1)).squeeze(1),
                                          class_weights(valid, label.float(), balance))
            stats["oracle_agreement"] = masked_mean((logits.detach().argmax(dim=1) == oracle).float(), valid).item()
    total = policy_loss + value_loss + confidence_loss + imitation * imitation_loss
    stats.update({"loss": total.item(), "policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                  "confidence_loss": confidence_loss.item(), "imitation_loss": imitation_loss.item()})
    return total, stats


def batch_dice(prediction: torch.Tensor, label: torch.Tensor) -> float:
    inter = (prediction & label).sum().item()
    total = prediction.sum().item() + label.sum().item()
    return 1.0 if total == 0 else 2.0 * inter / total
