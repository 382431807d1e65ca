"""Small helpers shared by test modules (fixtures live in conftest.py)."""

import json
import shutil
from pathlib import Path


def copy_msd_cases(source: Path, root: Path, count: int) -> Path:
    """A new MSD folder at ``root`` holding the first ``count`` training cases of ``source``."""
    manifest = json.loads((source / "dataset.json").read_text())
    entries = manifest["training"][:count]
    for entry in entries:
        for key in ("image", "label"):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / entry[key], root / entry[key])
    (root / "dataset.json").write_text(json.dumps({**manifest, "training": entries, "numTraining": count}))
    return root


class FileCreatingPickle:
    """Unpickling this creates ``target``: the file proves whether a loader ran the pickle."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def train_episode(model, batch, config, clicks, generators, balance=0.0, imitation=0.0, steps_per_round=1,
                  chosen=None, reinforce=True):
    """One rollout and each kept step's loss backpropagated on its own, as the Trainer does in one
    process; returns the rollout's statistics with the steps' mean statistics."""
    from mecca.episodes import rollout, step_loss

    run = rollout(model, batch, config, clicks, generators, steps_per_round, chosen, reinforce)
    totals = dict(run.stats)
    for record in run.steps:
        loss, stats = step_loss(model, run, record, config, balance, imitation, reinforce)
        (loss / len(run.steps)).backward()
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value / len(run.steps)
    return totals
