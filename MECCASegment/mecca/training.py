"""Training MECCA: runs of episodes (episodes.py) with Adam, resumable, on one or several
processes (torchrun), validated each epoch through the session a user gets.

Every random draw of a step derives from (seed, epoch, step), so a run killed at any point and
resumed from its last state file reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .cases import TrainingCase
from .checkpoint import load_model, load_training_state, save_model, save_training_state
from .cpu_kernels import native_bfloat16
from .defaults import KNOWN_STRUCTURE, KNOWN_STRUCTURE_DICE, NEW_STRUCTURE
from .episodes import make_batch, rollout, step_loss
from .errors import InputError
from .harness import MeccaMethod, simulate
from .networks import MeccaModel, NetworkConfig
from .progress import event_line
from .provenance import command_line, peak_memory_mb
from .recipe import TrainingConfig


def epoch_batches(train: list[TrainingCase], config: TrainingConfig, epoch: int) -> list[list[int]]:
    """This epoch's batches: same-dataset groups of case indices in a seeded order. With unlabelled
    cases, each labelled batch is followed by one unlabelled batch (Algorithm 1), the unlabelled
    cases taking turns from epoch to epoch. With ``balanced_groups`` every group (a dataset, or a
    dataset's structure) takes as many cases as the largest, the smaller ones repeated in fresh
    orders: 64 left-atria would otherwise be 4 % of an epoch beside 1,200 head-and-neck organs."""
    rng = np.random.default_rng([config.seed, epoch, 7])
    groups: dict[tuple[str, bool], list[int]] = {}
    for index, case in enumerate(train):
        groups.setdefault((case.dataset, case.labeled), []).append(index)
    largest = max(len(indices) for indices in groups.values())
    labeled, unlabeled = [], []
    for (_, is_labeled), indices in sorted(groups.items()):
        shuffled = rng.permutation(indices).tolist()
        if config.balanced_groups:
            while len(shuffled) < largest:
                shuffled += rng.permutation(indices).tolist()
            shuffled = shuffled[:largest]
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
        run = simulate(MeccaMethod(model), case.image, case.label, rounds, clicks_per_round, seed=0)
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
    """The summed loss of some kept rollout steps as a module, so that DistributedDataParallel sees
    each forward with its backward. The split architecture's image features are computed once,
    with gradients, for all the steps given."""

    def __init__(self, model: MeccaModel):
        super().__init__()
        self.model = model
        for name, net in model.networks.items():  # registered: DDP syncs their gradients
            self.add_module(name, net)

    def forward(self, run, records, config: TrainingConfig, balance: float, imitation: float, reinforce: bool):
        features = None
        if self.model.encoder is not None:
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16,
                                enabled=config.bfloat16 and native_bfloat16(self.model.device)):
                features = self.model.image_features(run.batch.image.to(self.model.device))
        total, stats = 0.0, {}
        for record in records:
            loss, step_stats = step_loss(self.model, run, record, config, balance, imitation, reinforce, features)
            total = total + loss
            for key, value in step_stats.items():
                stats[key] = stats.get(key, 0.0) + value
        return total, stats


def distributed_context() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun (NCCL on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Runs (or resumes) a training run; state and log live in ``<name>.run/`` beside the output
    (``m.run/`` for ``m.safetensors``).

    Under torchrun each process takes its share of every step's batch (DistributedSampler over
    the batch's cases); DistributedDataParallel averages the gradients, so N processes with
    ``batch_size`` cases each train like one process with N x ``batch_size``. Rank 0 alone logs,
    validates and writes files.
    """

    def __init__(self, out: str | os.PathLike, config: TrainingConfig, train: list[TrainingCase],
                 validation: list[TrainingCase], record: dict, network: NetworkConfig | None = None,
                 init: str | None = None, device: str = "cpu", command: str = "", progress: bool = True,
                 json_progress: bool = False, inference: dict | None = None, init_model: MeccaModel | None = None):
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
        self.inference = inference  # the model's session defaults (None: the --init model's, else the defaults)
        if init:
            self.model = init_model if init_model is not None else load_model(init)  # train() has it loaded
            self.record["init"] = str(init)
            self.lineage = lineage_of(self.model.metadata)
            if network is not None:  # the working grid and hints may change when fine-tuning; the weights fit either way
                self.model.config = replace(self.model.config, min_working_voxels=network.min_working_voxels,
                                            hint_encoding=network.hint_encoding)
                if network.fusion_out_channels != self.model.config.fusion_out_channels:
                    self.model = self.model.with_fusion_width(network.fusion_out_channels, config.seed)
        else:
            self.model = MeccaModel.create(network or NetworkConfig(), seed=config.seed)
            self.lineage = []
        self.model.to(self.device, memory_format=torch.channels_last_3d).train()
        frozen = tuple(config.frozen) + (("policy",) if config.confidence_only else ())
        if frozen and init is None:
            raise InputError("keeping parts of the networks as they are (frozen, confidence_only) needs an existing "
                             "MECCA model (--init)")
        parameters = dict(self.model.named_parameters())
        for prefix in frozen:
            kept = [name for name in parameters if name == prefix or name.startswith(prefix + ".")]
            if not kept:
                parts = sorted({".".join(name.split(".")[:2]) for name in parameters})
                raise InputError(f"frozen: {prefix!r} names no part of the networks; parts: {', '.join(parts)}")
            for name in kept:  # before DDP: it reduces only trained parameters
                parameters[name].requires_grad_(False)
        if not any(q.requires_grad for q in self.model.parameters()):
            raise InputError(f"frozen: {', '.join(frozen)} leave nothing of the networks to train")
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
        self._started: float | None = None  # when the time not yet added to ``elapsed`` began
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

    def model_record(self, metrics: dict, cases: str) -> dict:
        """A model file's record: the run so far and its validation ``metrics`` on ``cases``."""
        meta = self._metadata()
        meta["training"]["wall_time_s"] = round(self.elapsed, 1)
        meta["metrics"] = {"validation": metrics, "protocol": f"{cases}; simulated user, 3 clicks per round, 5 rounds, "
                                                              "automatic policy steps per round (the session's "
                                                              "default), ROI = object box + 8 voxels"}
        return meta

    def _metadata(self) -> dict:
        return {"inference": self.inference or self.model.inference, "lineage": self.lineage,
                "training": {"config": asdict(self.config), "data": self.record, "command": self.command,
                             "machine": f"{platform.node()} {platform.machine()} {platform.processor()} "
                                        f"torch {torch.__version__} threads {torch.get_num_threads()}",
                             "device": str(self.device), "processes": self.world, "history": self.history}}

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's steps: each holds batch_size cases per process."""
        return epoch_batches(self.train, replace(self.config, batch_size=self.config.batch_size * self.world), epoch)

    def resume(self) -> bool:
        """Continue from ``<name>.run/last.safetensors`` when it exists; True if it did."""
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
            print(event_line(event, **fields), flush=True)

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
            generators = [torch.Generator(self.device).manual_seed(int(np.random.default_rng(
                [config.seed, self.epoch, self.step, position, 1]).integers(2**62))) for position in positions]
            batch = make_batch([self.train[batch_cases[position]] for position in positions], config, rngs)
            share = len(positions) / len(mine)
            run = rollout(self.model, batch, config, clicks, generators, steps, chosen, reinforce)
            stats = dict(run.stats)
            # the joint networks backpropagate step by step (memory: one step's activations); the split
            # architecture's light heads keep all kept steps, so the image encoder runs once per episode
            groups = [run.steps] if self.model.encoder is not None else [[record] for record in run.steps]
            for number, records in enumerate(groups):
                last = index == len(passes) - 1 and number == len(groups) - 1
                with self.episode.no_sync() if self.world > 1 and not last else contextlib.nullcontext():
                    loss, step_stats = self.episode(run, records, config, balance, imitation, reinforce)
                    (loss * share / len(run.steps)).backward()
                for key, value in step_stats.items():
                    stats[key] = stats.get(key, 0.0) + value / len(run.steps)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + share * value
        torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), config.grad_clip)
        self.optimizer.step()
        return totals, batch.labeled

    def fit(self, save_every_s: float = 300.0, say=print) -> Path:
        """Train to the last epoch and write the model (``finish``). Interrupted (Ctrl-C), the run's
        state is saved first, so the same command resumes it where it stopped."""
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._fit(save_every_s)
        except KeyboardInterrupt:
            if self.world > 1:  # the other processes may not stop at the same step
                raise
            if self._started is not None:
                self.elapsed += time.monotonic() - self._started
            self._save_state()
            say(f"interrupted at epoch {self.epoch + 1}, step {self.step}: the run's state is saved in "
                f"{self.state_path}; the same command resumes it there (a step under way is done again)")
            raise

    def _fit(self, save_every_s: float) -> Path:
        config = self.config
        monitor = _validation_subset(self.validation, config.validation_cases_per_epoch)
        last_save = time.monotonic()
        while self.epoch < config.epochs:
            batches = self.batches(self.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.epoch)
            totals: dict[str, list[float]] = {}
            started = self._started = time.monotonic()
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
                    started = self._started = time.monotonic()
                    self._save_state()
                    last_save = time.monotonic()
            bar.close()
            self.elapsed += time.monotonic() - started
            self._started = None
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
        # best epoch is not always the last (research/NOTEBOOK.md, "Rounds of several steps in training")
        save_model(self.model, self.epoch_model_path(self.epoch + 1),
                   self.model_record(metrics, f"first {self.config.validation_cases_per_epoch} held-out cases per dataset"))
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
        path = save_model(self.model.to("cpu"), self.out, self.model_record(metrics, "every held-out case"))
        self._emit("done", model=str(path), validation=metrics)
        return path


def train(datasets, out, *, init=None, recipe: dict | None = None, epochs: int | None = None,
          learning_rate: float | None = None, seed: int | None = None, validation_fraction: float | None = None,
          labels: tuple[int, ...] | None = None, unlabeled=(), device: str = "cpu", restart: bool = False,
          skip_bad: bool = False, save_every_s: float = 300.0, json_progress: bool = False,
          say=print, cases: tuple[list[TrainingCase], list[TrainingCase], dict] | None = None) -> Path:
    """Train a MECCA model, or fine-tune one, on MSD-layout datasets (what ``mecca train`` runs).

    Parameters
    ----------
    datasets : list of path
        MSD folders (``dataset.json``, ``imagesTr/``, ``labelsTr/``) with labelled cases.
    out : path
        The model file to write (``.safetensors``); the resumable state and the log go to
        ``<name>.run/`` beside it.
    init : path, optional
        A model to fine-tune: the run keeps its network and session defaults and takes the gentler
        fine-tuning schedule (``defaults.FINE_TUNING``) instead of a new model's, at a rate chosen by
        how the model segments these cases (``fine_tuning_schedule``), for as many epochs, unless given;
        the written model's lean correction is then guarded against collapse on the same cases
        (``guard_lean_correction``).
    recipe : dict, optional
        Training settings (``recipe.TrainingConfig`` fields, ``"network"``, ``"inference"``), as a
        ``--config`` file holds them.
    epochs, learning_rate, seed, validation_fraction : optional
        Override the recipe's and the schedule's values; None keeps them.
    labels : tuple of int, optional
        Label values that count as foreground (default: every non-zero value).
    unlabeled : list of path
        MSD folders of interactively segmented, never labelled cases (image + clicks; paper eq. 6).
    device : {"cpu", "cuda"}
    restart : bool
        Ignore a saved state in ``<name>.run/`` and start over (otherwise the run resumes there).
    skip_bad : bool
        Train on the usable cases when some are bad (they are reported either way).
    save_every_s : float
        Seconds between training-state saves within an epoch.
    json_progress : bool
        One JSON object per line on stdout (``progress.event_line``) instead of a progress bar.
    say : callable
        Where the run's messages go.
    cases : (train, validation, record), optional
        Cases already in memory (``cases.load_cases``' result, e.g. a split packed for a machine
        without SimpleITK) instead of reading ``datasets``.

    Returns
    -------
    path : Path
        The model file written, its metadata holding the data, command, machine, wall time,
        validation Dice per round and lineage.

    Raises
    ------
    InputError
        A dataset, label set or setting that cannot be used; the message says which and why.
    """
    from .cases import load_cases
    from .recipe import resolve_recipe

    model = load_model(init) if init else None
    config, network, inference = resolve_recipe(recipe or {}, model, epochs=epochs, learning_rate=learning_rate,
                                                seed=seed, validation_fraction=validation_fraction)
    train_cases, validation, record = cases or load_cases(
        [str(d) for d in datasets], labels, config.validation_fraction, [str(d) for d in unlabeled],
        config.labeled_fraction, skip_bad=skip_bad, rest_unlabeled=config.rest_unlabeled,
        min_working_voxels=network.min_working_voxels, structures=config.structures)
    if model is not None:
        given = {"learning_rate": learning_rate, "epochs": epochs}
        left = [name for name, value in given.items() if value is None and name not in (recipe or {})]
        if left:
            schedule = fine_tuning_schedule(model, train_cases, say)
            config = replace(config, **{name: schedule[name] for name in left})
    trainer = Trainer(out, config, train_cases, validation, record, network=network, init=init, device=device,
                      command=command_line(), json_progress=json_progress, inference=inference, init_model=model)
    if not restart and trainer.resume():
        say(f"resuming {trainer.state_path} at epoch {trainer.epoch + 1}, step {trainer.step}")
    say(f"training on {sum(c.labeled for c in train_cases)} labelled + {sum(not c.labeled for c in train_cases)} "
        f"unlabelled cases, validating on {len(validation)}; state and log in {trainer.run_dir}/")
    path = trainer.fit(save_every_s=save_every_s, say=say)
    if model is not None and "lean_correction" not in (recipe or {}).get("inference", {}):
        guard_lean_correction(path, train_cases, say)
    say(f"wrote {path}")
    return path


LEAN_CORRECTIONS = (0.0, 0.25, 0.5)
COLLAPSE_SHARE = 0.5


def guard_lean_correction(path: Path, cases: list[TrainingCase], say=print, scored: int = 4) -> float:
    """Guard a fine-tuned model's lean correction (its session default, inherited from the ``--init``
    model) against collapse: scored by round-5 Dice of 5 rounds of 3 interior clicks on the first
    ``scored`` labelled cases it was tuned on, the inherited value stays unless it reaches less than
    COLLAPSE_SHARE of the best of LEAN_CORRECTIONS, which then replaces it. Tuned heads alone emptied
    the mask from round 2 under the inherited 0.5 (0.000 against 0.362 with 0 on validation
    patients); but the tuned cases do not rank values that all work (on the spinal cord they
    preferred 0, which scored 9 points less than 0.5 on validation patients): docs/results.md, "Fine-tuning
    on a structure the model never saw". The scores are recorded in the model file."""
    labeled = [case for case in cases if case.labeled][:scored]
    model = load_model(path)
    inherited = model.inference["lean_correction"]
    if not labeled:
        return inherited
    model.eval()
    scores = {}
    for lean in sorted({*LEAN_CORRECTIONS, inherited}):
        runs = [simulate(MeccaMethod(model, lean_correction=lean), case.image, case.label, user="interior").dice[-1]
                for case in labeled]
        scores[lean] = round(float(np.mean(runs)), 4)
    best = max(scores, key=lambda lean: (scores[lean], -lean))
    chosen = inherited if scores[inherited] >= COLLAPSE_SHARE * scores[best] else best
    model.metadata = {**model.metadata, "inference": {**model.metadata.get("inference", {}), "lean_correction": chosen},
                      "lean_correction_choice": {"round5_dice": {str(k): v for k, v in scores.items()},
                                                 "inherited": inherited, "cases": len(labeled), "user": "interior"}}
    save_model(model, path)
    say(f"lean correction {chosen:g} for the fine-tuned model (round-5 Dice of interior clicks on {len(labeled)} of "
        f"its cases: " + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items()) +
        ("; the inherited value kept" if chosen == inherited else f"; the inherited {inherited:g} collapsed") + ")")
    return chosen


def fine_tuning_schedule(model: MeccaModel, cases: list[TrainingCase], say=print, scored: int = 4) -> dict:
    """The learning rate and epochs of a fine-tuning left to its defaults: KNOWN_STRUCTURE's where
    the model already segments the structure (round-5 Dice of 5 simulated rounds on the first
    ``scored`` labelled cases at least KNOWN_STRUCTURE_DICE), NEW_STRUCTURE's where it does not
    (recipe.py says why). Deterministic, so a resumed run picks the same."""
    labeled = [case for case in cases if case.labeled][:scored]
    if not labeled:
        return dict(KNOWN_STRUCTURE)
    model.eval()
    scores = validate(model, labeled)
    dice = float(np.mean([m["dice_mean_per_round"][-1] for m in scores.values()]))
    known = dice >= KNOWN_STRUCTURE_DICE
    schedule = dict(KNOWN_STRUCTURE if known else NEW_STRUCTURE)
    say(f"the model scores Dice {dice:.2f} after 5 simulated rounds on {len(labeled)} of these cases: "
        f"{'a structure it knows' if known else 'a structure it does not know'}; by default fine-tuning takes "
        f"{schedule['epochs']} epochs at {schedule['learning_rate']:g} (--epochs and --lr choose others)")
    return schedule


def lineage_of(metadata: dict) -> list[dict]:
    """The training stages behind a model file, oldest first: its own ``lineage`` and the run that
    wrote it, each with its command, machine, wall time and validation (what a fine-tuned model's
    card lists, so a model documents everything that made it)."""
    training = metadata.get("training")
    if not training:
        return list(metadata.get("lineage", []))
    stage = {"command": training.get("command"), "machine": training.get("machine"), "device": training.get("device"),
             "epochs": training.get("config", {}).get("epochs"), "wall_time_s": training.get("wall_time_s"),
             "init": training.get("data", {}).get("init"), "validation": metadata.get("metrics", {}).get("validation")}
    return [*metadata.get("lineage", []), stage]
