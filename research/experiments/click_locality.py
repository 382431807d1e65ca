"""Clicks that make the mask worse (research/NOTEBOOK.md): one case's errors round by round.

    python -m research.experiments.click_locality case MSD_FOLDER CASE_NAME [LEAN_CORRECTION]
        false-positive / false-negative voxels per round of the bundled model on one held-out case
        (lean correction 0 unless given: the sessions before it existed)

The notebook's evaluation in which each round may change only voxels near its new clicks patched the
session's private state; it ran from commit fecb0ce of this file (``evaluate R_MM``), was not adopted,
and its results stay in research/results/click-locality-*.json.
"""

import sys

import numpy as np
from mecca.checkpoint import load_model
from mecca.datasets import MSDDataset
from mecca.harness import MeccaMethod, simulate
from mecca.resources import DEFAULT_MODEL, resource_path


def case_errors(root: str, name: str, lean_correction: float) -> None:
    case = next(c for c in MSDDataset.open(root).validation_cases(0.2) if c.name == name)
    image, label = case.load()
    label = label > 0
    model = load_model(resource_path(*DEFAULT_MODEL)).prepare_for_inference()
    method = MeccaMethod(model, lean_correction=lean_correction)
    run = simulate(method, image, label, keep_masks=True)
    previous = np.zeros_like(label)
    for number, (mask, clicks) in enumerate(zip(run.masks, method.session.clicks_by_round), start=1):
        added = mask & ~previous
        print(f"round {number}: Dice {run.dice[number - 1]:.3f}, false positive {np.count_nonzero(mask & ~label)}, "
              f"false negative {np.count_nonzero(~mask & label)}, added {np.count_nonzero(added)} "
              f"({np.count_nonzero(added & ~label)} outside the object), clicks "
              f"{' '.join('+' if c.positive else '-' for c in clicks)}")
        previous = mask


if __name__ == "__main__":
    if sys.argv[1:2] == ["case"] and len(sys.argv) in (4, 5):
        case_errors(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else 0.0)
    else:
        sys.exit(__doc__)
