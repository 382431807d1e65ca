"""What bfloat16 inference costs in Dice, set against how much float32 itself moves under a weight
perturbation as small as bfloat16's rounding (docs/performance.md).

The simulated user clicks where the mask is wrong, so a tiny numerical difference changes later
clicks and the rounds that follow: the Dice of round 5 scatters from one bit-level variant of the
model to the next. Each case is run with the bundled model in bfloat16 (the default), in float32,
and in float32 with every policy weight multiplied by (1 + u), u uniform in +/- 2^-9 (the relative
rounding error of bfloat16), for several seeds; the paired per-case differences to bfloat16 give the
cost and its standard error.

    python -m research.experiments.bfloat16_cost ../shared/data/LeftAtrium2018 --all-cases --json OUT.json

It runs the bundled model with the session's default (automatic) steps per round. The stored
research/results/bfloat16-cost-*.json were measured before stage 6, with the stage-5 model
(`git show 89e6bde:Resources/Models/mecca.safetensors`) and one step per round.
"""

import argparse
import json
import sys

import numpy as np
import torch
from mecca.checkpoint import load_model
from mecca.datasets import MSDDataset
from mecca.harness import MeccaMethod, evaluate
from mecca.resources import DEFAULT_MODEL, resource_path

from . import held_out

BFLOAT16_RELATIVE_ROUNDING = 2.0**-9


def variants(jitter_seeds: int):
    """(name, model) pairs: the default bfloat16, float32, and jittered float32 models."""
    path = resource_path(*DEFAULT_MODEL)
    yield "bfloat16", load_model(path, precision="bfloat16")
    yield "float32", load_model(path, precision="float32")
    for seed in range(1, jitter_seeds + 1):
        model = load_model(path, precision="float32")
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in model.policy.parameters():
                weight.mul_(1 + (torch.rand(weight.shape, generator=generator) * 2 - 1) * BFLOAT16_RELATIVE_ROUNDING)
        yield f"float32-jitter-{seed}", model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="MSD folder")
    parser.add_argument("--all-cases", action="store_true", help="every case, not only the validation split "
                        "(a numerical difference does not depend on whether the model saw the case)")
    parser.add_argument("--jitter-seeds", type=int, default=2)
    parser.add_argument("--json", help="write the per-variant Dice and the paired differences here")
    held_out.add_lean_correction(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    dataset = MSDDataset.open(args.dataset)
    cases = sorted(dataset.cases, key=lambda c: c.name) if args.all_cases else dataset.validation_cases(0.2)
    dice = {}
    for name, model in variants(args.jitter_seeds):
        summary, failures, _ = evaluate(cases, {name: lambda m=model: MeccaMethod(m, lean_correction=args.lean_correction)},
                                              progress=False)
        if failures:
            sys.exit(f"{name}: {failures}")
        dice[name] = np.array([case["dice_per_round"] for case in summary[name]["per_case"]])
        print(f"{name:18s} Dice per round {dice[name].mean(axis=0).round(4).tolist()}", flush=True)
    result = {"dataset": args.dataset, "cases": len(cases), "mean_dice_per_round": {}, "difference_to_bfloat16": {}}
    for name, values in dice.items():
        result["mean_dice_per_round"][name] = values.mean(axis=0).round(4).tolist()
        if name != "bfloat16":
            last = values[:, -1] - dice["bfloat16"][:, -1]
            result["difference_to_bfloat16"][name] = {"round_5_mean": round(float(last.mean()), 4),
                                                      "round_5_standard_error": round(float(last.std() / np.sqrt(len(last))), 4)}
            print(f"{name:18s} minus bfloat16 at round 5: {last.mean():+.4f} +/- {last.std() / np.sqrt(len(last)):.4f} (SE)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
    return result


if __name__ == "__main__":
    main()
