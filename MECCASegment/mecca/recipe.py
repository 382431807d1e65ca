"""What determines a training run (stored in its checkpoints and its model files): TrainingConfig,
and the two schedules a run starts from (a new model, or a fine-tuning of an existing one).

Research recipes are JSON files of these fields (``mecca train --config``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .cases import STRUCTURE_MODES
from .defaults import FINE_TUNING, INFERENCE_DEFAULTS, NEW_MODEL, USER_STYLES
from .environment import IMITATION_TARGETS
from .errors import InputError, read_json_input
from .networks import MeccaModel, NetworkConfig


@dataclass
class TrainingConfig:
    """Everything that determines a run (stored in its checkpoints)."""

    epochs: int = NEW_MODEL["epochs"]
    rounds: int = 5
    gamma: float = 0.95
    alpha: float = 0.8
    beta: float = 1.0
    learning_rate: float = NEW_MODEL["learning_rate"]  # a fine-tuning's: defaults.FINE_TUNING, training.fine_tuning_schedule
    entropy_weight: float = 0.01
    confidence_reward: bool = True  # False = IteR-MRL ablation (c = 1 in the reward)
    boundary_reward: float = 0.0  # lambda of BS-IRIS's boundary reward: gains weighted 1 + lambda w (environment.boundary_weights)
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
    frozen: tuple[str, ...] = ()  # parts kept as the --init model has them, e.g. "policy.trunk", "confidence"
    imitation_weight: float = 1.0  # auxiliary cross-entropy towards the step to the label (episodes.step_loss) ...
    imitation_epochs: float = 10.0  # ... fading to 0 over these epochs
    imitation_target: str = "fitting"  # the imitated step (environment.oracle_actions): "fitting" or "largest"
    final_lr_fraction: float = 0.1  # cosine decay of the learning rate to this fraction at the last epoch
    grad_clip: float = 5.0
    validation_fraction: float = 0.2
    labeled_fraction: float = 1.0  # of each labelled dataset's training cases keep their labels ...
    rest_unlabeled: bool = False  # ... and the others train as unlabelled cases (eq. 6) rather than being left out
    validation_cases_per_epoch: int = 12  # per dataset, for the per-epoch curve
    structures: str = "union"  # "each": every label value (and a connected union) is an object of its own (cases.load_cases)
    balanced_groups: bool = False  # every dataset (or dataset:structure) gets as many episodes per epoch as the largest
    seed: int = 0

    def __post_init__(self):
        if self.structures not in STRUCTURE_MODES:
            raise ValueError(f"structures must be one of {', '.join(STRUCTURE_MODES)}, got {self.structures!r}")
        if self.imitation_target not in IMITATION_TARGETS:
            raise ValueError(f"imitation_target must be one of {', '.join(IMITATION_TARGETS)}, "
                             f"got {self.imitation_target!r}")
        if not self.user_styles or set(self.user_styles) - set(USER_STYLES):
            raise ValueError(f"user_styles must name some of {', '.join(USER_STYLES)}, got {self.user_styles!r}")
        for name in ("epochs", "rounds", "batch_size", "cases_per_pass", "backward_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        if not isinstance(self.frozen, tuple) or not all(isinstance(part, str) for part in self.frozen):
            raise ValueError(f"frozen must be a list of parts such as [\"policy.trunk\", \"confidence\"], "
                             f"got {self.frozen!r}")
        if not self.boundary_reward >= 0.0:
            raise ValueError(f"boundary_reward must be 0 (none) or more, got {self.boundary_reward}")
        for name in ("synthetic_fraction", "thick_slice_fraction", "intensity_augmentation", "mask_start_fraction",
                     "invert_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def read_recipe(path: str | Path) -> dict:
    """A research recipe: a JSON object of TrainingConfig fields (and "network": NetworkConfig fields)."""
    recipe = read_json_input(path, "recipe file")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("network", {}), dict):
        raise InputError(f"{path}: a recipe is a JSON object of training settings, with \"network\" an object")
    return recipe


def resolve_recipe(recipe: dict, init: MeccaModel | None = None,
                   **given) -> tuple[TrainingConfig, NetworkConfig, dict]:
    """The run's settings: the schedule of a new model (TrainingConfig's defaults) or of a fine-tuning
    (defaults.FINE_TUNING, with ``init``), then the recipe's fields, then the ``given`` ones (the command line's options
    that were given; None means not given). A fine-tuning inherits the ``init`` model's network
    settings (working-grid minimum, hints, widths) and its training steps per round unless the
    recipe changes them. The third result is the model's session defaults (MeccaModel.inference:
    the ``init`` model's, or the defaults, under the recipe's "inference"). InputError names a field
    that does not exist or a value out of range."""
    recipe = dict(recipe)
    network_recipe = recipe.pop("network", {})
    inference = {**(init.inference if init is not None else INFERENCE_DEFAULTS), **recipe.pop("inference", {})}
    if set(inference) != set(INFERENCE_DEFAULTS):
        raise InputError(f"recipe: \"inference\" takes {', '.join(INFERENCE_DEFAULTS)}, got {', '.join(sorted(inference))}")
    base = dict(FINE_TUNING if init is not None else {})
    if init is not None and "steps_per_round" in init.metadata.get("training", {}).get("config", {}):
        base["steps_per_round"] = init.metadata["training"]["config"]["steps_per_round"]
    values = {**base, **recipe, **{k: v for k, v in given.items() if v is not None}}
    try:
        config = TrainingConfig.from_dict(values)
        network = NetworkConfig.from_dict({**(init.config if init is not None else NetworkConfig()).to_dict(),
                                           **network_recipe})
    except (TypeError, ValueError) as error:
        known = ", ".join(f.name for f in fields(TrainingConfig))
        network_fields = ", ".join(f.name for f in fields(NetworkConfig))
        raise InputError(f"recipe: {error} (training fields: {known}; \"network\": {network_fields})") \
            from error
    if init is not None and network.fusion_out_channels < init.config.fusion_out_channels:
        raise InputError(f"recipe: the network's fusion_width can only widen the --init model's fusion layer "
                         f"({init.config.fusion_out_channels} channels), got {network.fusion_width}")
    return config, network, inference

