"""Seconds per training step of network variants on the same real cases and the same draws
(docs/performance.md, "Training time: the split architecture"): each variant's Trainer takes the
first STEPS steps of one epoch of the all-structures recipe, one thread.

    python -m research.experiments.step_speed --dataset ../shared/data/Task04_Hippocampus \\
        --dataset ../shared/data/LeftAtrium2018 --dataset ../shared/data/OpenKBP_HeadNeckCT joint split
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from mecca.cases import load_cases
from mecca.networks import NetworkConfig
from mecca.recipe import read_recipe, resolve_recipe
from mecca.training import Trainer

RECIPE = "research/recipes/split-all-structures.json"
VARIANTS = ("joint", "split")  # the bundled model's layout; the recipe's split network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.experiments.step_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("variants", nargs="+", choices=VARIANTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe = read_recipe(RECIPE)
    config, network, _ = resolve_recipe(recipe)
    # a tenth of the cases (the 0.9 "held out" are not read into the Trainer): enough to draw the steps from
    train, _, _ = load_cases(args.dataset, None, 0.9, progress=False, min_working_voxels=network.min_working_voxels,
                             structures=config.structures)
    for name in args.variants:
        variant = network if name == "split" else NetworkConfig()
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(f"{folder}/m.safetensors", config, train, [], {}, network=variant, progress=False)
            batches = trainer.batches(0)
            seconds = []
            for step in range(args.steps):
                trainer.step = step
                start = time.perf_counter()
                trainer.train_step(batches[step])
                seconds.append(time.perf_counter() - start)
        print(f"{name}: {sum(seconds):.1f} s for {args.steps} steps, median {np.median(seconds):.2f} s, "
              f"{config.batch_size * args.steps / sum(seconds) * 3600:.0f} episodes per hour", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
