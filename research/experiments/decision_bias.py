"""Is the mask biased towards foreground, and what would removing the bias at inference buy?

Training up-weights the foreground voxels' reward by the square root of the crop's background /
foreground ratio (training.class_weights, strength 0.5), which moves the policy's decisions towards
"up". Here, on the held-out cases under the usual protocol, each policy step's "up" action scores
(+0.1, +0.2, +0.4) are lowered by b before the argmax (b = 0: the policy's own scores; the logit
adjustment of a class-weighted classifier, Menon et al. 2021), and the mask's false-positive and
false-negative voxels are counted after round 5 (means per case). The sessions' own lean
correction (from round 2) comes on top of b; research/NOTEBOOK.md's figures are with --lean-correction 0:

    python -m research.experiments.decision_bias ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 --json OUT.json
"""

import numpy as np
import torch
from mecca.environment import ACTION_TENTHS
from mecca.harness import MeccaMethod, simulate

from . import held_out

BIASES = (0.0, 0.5, 1.0)


def dataset_results(root: str, model, args) -> dict:
    cases = held_out.validation_cases(root)
    shipped = model.action_scores
    up = torch.tensor([tenths > 0 for tenths in ACTION_TENTHS], dtype=torch.float32).view(1, -1, 1, 1, 1)
    results = {}
    for bias in BIASES:
        model.action_scores = lambda state, flip_average=False, b=bias: shipped(state, flip_average) - b * up.to(state.dtype)
        dice, false_positive, false_negative = [], [], []
        for image, label in cases:
            method = MeccaMethod(model, lean_correction=args.lean_correction)  # on top of b, from round 2
            dice.append(simulate(method, image, label).dice)
            mask, truth = method.session.mask > 0, label > 0
            false_positive.append(np.count_nonzero(mask & ~truth))
            false_negative.append(np.count_nonzero(~mask & truth))
        results[str(bias)] = {"dice_per_round": np.mean(dice, axis=0).round(4).tolist(),
                              "false_positive_voxels": round(float(np.mean(false_positive))),
                              "false_negative_voxels": round(float(np.mean(false_negative)))}
    model.action_scores = shipped
    return results | {"cases": len(cases)}


if __name__ == "__main__":
    held_out.run(__doc__, dataset_results)
