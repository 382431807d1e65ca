"""What the supervised baselines (InterCNN, DeepIGeoS, the automatic P-Net and U-Net) share: their
model files and their training loop.

The files use the engine's format (safetensors + JSON metadata, never pickle) with the baseline's
own kind in ``network.model``, which the product refuses to load as a MECCA model
(mecca.networks.NetworkConfig). Training runs on the engine's episodes (mecca.episodes.make_batch:
the same crops, margins, flips and contrast inversion as MECCA's) with the engine's schedule of the
class weights, and writes a model file after every epoch with its validation."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from mecca.cases import load_cases
from mecca.checkpoint import finite_weights, read_model_file, write_model_file
from mecca.episodes import EpisodeBatch, make_batch
from mecca.errors import CheckpointError, InputError
from mecca.harness import InteractiveMethod, simulate
from mecca.networks import NetworkConfig
from mecca.recipe import TrainingConfig, read_recipe
from mecca.training import epoch_batches
from torch import nn


def save_baseline(net: nn.Module, kind: str, config: NetworkConfig, path, metadata: dict | None = None,
                  **details) -> Path:
    """Write ``net``'s weights with its backbone ``config`` and the baseline's own ``details``
    (beside the network record, which the product reads)."""
    meta = {"format": "mecca-model", "format_version": 1, "network": {**config.to_dict(), "model": kind},
            "baseline": details, **(metadata or {})}
    return write_model_file({f"policy.{k}": v for k, v in net.state_dict().items()}, {"mecca": json.dumps(meta)},
                            Path(path))


def read_baseline(path, kind: str) -> tuple[dict[str, torch.Tensor], NetworkConfig, dict, dict]:
    """A ``kind`` model file -> (weights, backbone config, the baseline's details, the rest of its
    metadata); CheckpointError for another kind or broken weights."""
    tensors, meta = read_model_file(Path(path))
    network = dict(meta.get("network", {}))
    if network.get("model") != kind:
        raise CheckpointError(f"{path}: a {network.get('model', '?')!r} model where a {kind!r} one was expected")
    config = NetworkConfig.from_dict({**network, "model": "mecca"})  # the backbone's widths and dilations
    weights = {k.removeprefix("policy."): v for k, v in finite_weights(tensors, Path(path)).items()}
    rest = {k: v for k, v in meta.items() if k not in ("format", "format_version", "network", "baseline")}
    return weights, config, meta.get("baseline", {}), rest


def load_weights(net: nn.Module, weights: dict[str, torch.Tensor], path) -> nn.Module:
    """``net`` in eval mode with ``weights``; CheckpointError when they do not fit the architecture
    the file describes."""
    try:
        net.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match the architecture the file describes ({error})") from error
    return net.eval()


def in_memory(method_class: type[InteractiveMethod], **attributes) -> InteractiveMethod:
    """A baseline's harness method on a network in memory (validation during training), without
    reading a model file: ``attributes`` are what its constructor would have read."""
    method = method_class.__new__(method_class)
    method.__dict__.update(attributes)
    return method


def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every supervised baseline's training takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dataset", action="append", required=True, help="MSD folder (repeatable)")
    parser.add_argument("--out", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", help="research recipe: TrainingConfig fields for the episodes (crops, users; "
                        "research/recipes/intercnn.json is the shipped InterCNN's)")
    return parser


def training_recipe(args) -> TrainingConfig:
    """The run's TrainingConfig: ``--config``'s fields (no "network": the baseline's options set
    it), then --epochs, --lr and --seed."""
    recipe = read_recipe(args.config) if args.config else {}
    if "network" in recipe:
        raise InputError(f"{args.config}: a baseline's recipe takes training settings only, not \"network\"")
    try:
        return TrainingConfig.from_dict({**recipe, "epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed})
    except (TypeError, ValueError) as error:
        raise InputError(f"{args.config}: {error}") from error


# (net, the step's episodes, the step's seeded generator, the class-weight strength, the share of the
# run's steps done) -> (loss, {"loss": ...})
StepLoss = Callable[[nn.Module, EpisodeBatch, np.random.Generator, float, float], tuple[torch.Tensor, dict]]


def train_supervised(build: Callable[[], nn.Module], step_loss: StepLoss, save: Callable[[nn.Module, Path, dict], Path],
                     method: Callable[[nn.Module], InteractiveMethod], dataset_dirs: list[str], out,
                     recipe: TrainingConfig, min_working_voxels: int | None, validation_rounds: int = 5) -> Path:
    """Adam at ``recipe.learning_rate`` on ``step_loss`` over ``recipe.epochs`` passes of the
    training split, from the network ``build`` makes under ``recipe.seed``; after every epoch
    ``save``s ``<out>.epoch-N`` with the Dice per round of ``method`` (the network in memory under
    the harness) on ``recipe.validation_cases_per_epoch`` held-out cases (none: no validation),
    then ``out`` after the last. ``recipe.labeled_fraction`` and ``rest_unlabeled`` work as in
    ``mecca train`` (a semi-supervised loss gets the unlabelled batches, ``batch.labeled`` False,
    after each labelled one)."""
    train_cases, validation, record = load_cases(dataset_dirs, None, recipe.validation_fraction,
                                                 labeled_fraction=recipe.labeled_fraction,
                                                 rest_unlabeled=recipe.rest_unlabeled,
                                                 min_working_voxels=min_working_voxels)
    torch.manual_seed(recipe.seed)
    net = build().to(memory_format=torch.channels_last_3d).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate)
    history, started, out = [], time.monotonic(), Path(out)
    for epoch in range(recipe.epochs):
        balance = recipe.class_balance_floor + (1 - recipe.class_balance_floor) * max(
            0.0, 1 - epoch / recipe.class_balance_epochs)
        losses, batches = [], epoch_batches(train_cases, recipe, epoch)
        for step, cases in enumerate(batches):
            rngs = [np.random.default_rng([recipe.seed, epoch, step, position]) for position in range(len(cases))]
            batch = make_batch([train_cases[i] for i in cases], recipe, rngs)
            optimizer.zero_grad(set_to_none=True)
            loss, stats = step_loss(net, batch, np.random.default_rng([recipe.seed, epoch, step]), balance,
                                    (epoch + step / len(batches)) / recipe.epochs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
            optimizer.step()
            losses.append(stats["loss"])
        net.eval()
        dice = [simulate(method(net), case.image, case.label, rounds=validation_rounds).dice
                for case in validation[:recipe.validation_cases_per_epoch]]
        net.train()
        history.append({"epoch": epoch + 1, "elapsed_s": round(time.monotonic() - started, 1),
                        "loss": round(float(np.mean(losses)), 5),
                        "validation_dice_mean_per_round": np.mean(dice, axis=0).round(4).tolist() if dice else []})
        print(json.dumps(history[-1]), flush=True)
        metadata = {"training": {"config": asdict(recipe), "data": record, "history": history}}
        save(net, out.with_name(f"{out.stem}.epoch-{epoch + 1}{out.suffix}"), metadata)
    return save(net.eval(), out, metadata)
