"""Weight averages of MECCA models (research/NOTEBOOK.md, "Rounds of several steps in training").

    python -m research.experiments.weight_average average OUT MODEL MODEL [MODEL ...]
        the mean of the models' weights ("model soup"; every model of the same architecture)
    python -m research.experiments.weight_average train EVERY <mecca train options>
        mecca train, also writing the model every EVERY optimiser steps to <out>.run/snapshots/
        (the snapshots of an epoch, averaged with the first command, are its stochastic weight average)
"""

import sys

from mecca import cli, training
from mecca.checkpoint import load_model, save_model
from mecca.networks import MeccaModel


def average(paths: list[str]) -> MeccaModel:
    """The models' mean weights, in the first model's record (plus the list of models averaged)."""
    models = [load_model(path) for path in paths]
    for path, model in zip(paths[1:], models[1:]):
        if model.config != models[0].config:
            raise ValueError(f"{path}: another architecture than {paths[0]}; only models of one architecture average")
    weights = {name: sum(m.state_dict()[name] for m in models) / len(models) for name in models[0].state_dict()}
    models[0].load_state_dict(weights)
    models[0].metadata = {**models[0].metadata, "weight_average_of": list(paths)}
    return models[0]


def train_with_snapshots(every: int, train_options: list[str]) -> int:
    plain_step = training.Trainer.train_step

    def step_and_snapshot(trainer, batch_cases):
        result = plain_step(trainer, batch_cases)
        if (trainer.step + 1) % every == 0:  # trainer.step counts the steps done before this one
            folder = trainer.run_dir / "snapshots"
            folder.mkdir(exist_ok=True)
            save_model(trainer.model, folder / f"epoch{trainer.epoch + 1}-step{trainer.step + 1:04d}.safetensors",
                       trainer.model_record({}, "none"))
        return result

    training.Trainer.train_step = step_and_snapshot
    return cli.main(["train", *train_options])


if __name__ == "__main__":
    if sys.argv[1:2] == ["average"] and len(sys.argv) >= 5:
        save_model(average(sys.argv[3:]), sys.argv[2])
    elif sys.argv[1:2] == ["train"] and len(sys.argv) >= 4:
        sys.exit(train_with_snapshots(int(sys.argv[2]), sys.argv[3:]))
    else:
        sys.exit(__doc__)
