"""The defaults that the command line, the Slicer module and the engine share, in one place and
importable without PyTorch (``mecca --help`` and the Slicer module's panel read them before the
networks load): what a session does unless told otherwise, the simulated users, the devices, and
every training schedule's learning rate and length.
"""

from __future__ import annotations

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")  # "auto": a CUDA GPU when PyTorch sees one, else the CPU

# -- a session ----------------------------------------------------------------------------------
AUTO_STEPS = "auto"  # policy steps per round chosen by the region's size (session.automatic_steps)
START_ESTIMATES = ("none", "random-walker")  # what a session's first round starts from
# A model's own session defaults (MeccaModel.inference), as its training run records them; files
# from before the setting get those the bundled model was used with.
INFERENCE_DEFAULTS = {"lean_correction": 0.5, "steps_per_round": AUTO_STEPS}

# -- simulated users ----------------------------------------------------------------------------
USER_STYLES = ("edge", "interior", "random")  # users.SimulatedUser's click styles; evaluation uses the first two

# -- training schedules -------------------------------------------------------------------------
# A new model (TrainingConfig's defaults).
NEW_MODEL = {"learning_rate": 5e-4, "epochs": 30}
# A fine-tuning (--init) must not restart that from-scratch schedule: a high rate, balanced
# foreground weights and a strong imitation term undid the bundled model's training on a few cases
# of a new structure (research/NOTEBOOK.md, "Fine-tuning on a few cases"). Its rate, 2e-5, is the
# one of 1e-4, 5e-5 and 2e-5 that cost the bundled model least when fine-tuned 10 epochs on 3
# left-atrium cases (docs/results.md).
FINE_TUNING = {"learning_rate": 2e-5, "class_balance_epochs": 0.0, "imitation_weight": 0.3, "imitation_epochs": 1000.0}
# A fine-tuning on a structure the model does not know wants the opposite: 2e-5 taught a
# hippocampus-only model nothing on 3 left-atrium cases, 3e-4 lifted it most of 2e-5, 1e-4, 3e-4
# and 1e-3 (docs/results.md). Which case it is, is read from the model's own round-5 Dice on the
# fine-tuning cases (training.fine_tuning_schedule): a known structure scored 0.8 and more there, an
# unknown one 0.3-0.6 (the spleen, tumours and lesions of the project's judges: 0.06-0.58).
# And its length: on a structure the model does not know, 40 epochs on 3 cases lifted the
# hippocampus-only model 15 (edge) / 7 (interior) points more than 10 did, 120 no further; on a
# known one 40 epochs cost the bundled model 5 points where 10 cost 1 (docs/results.md).
KNOWN_STRUCTURE = {"learning_rate": FINE_TUNING["learning_rate"], "epochs": 10}
NEW_STRUCTURE = {"learning_rate": 3e-4, "epochs": 40}
KNOWN_STRUCTURE_DICE = 0.7


def checked_lean_correction(value) -> float:
    """A session's lean correction (session.InteractiveSession), refused unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise InputError(f"the lean correction must be a finite number of at least 0, got {value!r}")
    return float(value)
