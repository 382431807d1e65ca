"""Sessions that start from an existing segment (research/NOTEBOOK.md, "Starting from an existing segment").

Each held-out case starts from its label grown or shrunk by 2 voxels (p = 0.9 inside, 0.1 outside,
as the Slicer module starts from a segment), ROI = object box + 8 voxels; then 3 rounds of the
seeded simulated user's 3 clicks. Dice of the start and after each round, mean over cases:

    python -m research.experiments.existing_segment ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 --json OUT.json
        [--lean-correction B] [--steps-per-round N] [--clicks-in-round-1-only]

The notebook's "every round" rows (the lean correction in round 1 too) patched the session's private
state; they ran from commit fecb0ce of this file (``--correct-first-round``), were not adopted, and
stay in research/results/existing-segment-correcting-round-1.json.
"""

import numpy as np
from mecca.defaults import AUTO_STEPS
from mecca.geometry import ijk_from_kji, label_box
from mecca.metrics import dice
from mecca.session import InteractiveSession
from mecca.users import SimulatedUser
from scipy import ndimage

from . import held_out

ROUNDS = 3
STARTS = {"grown by 2 voxels": ndimage.binary_dilation, "shrunk by 2 voxels": ndimage.binary_erosion}


def dataset_dice(root: str, model, args) -> dict[str, list[float]]:
    results = {}
    for name, change in STARTS.items():
        runs = []
        for image, label in held_out.validation_cases(root):
            label = label > 0
            start = change(label, iterations=2)
            session = InteractiveSession(image, model, roi=label_box(label), initial_mask=start,
                                         lean_correction=args.lean_correction, steps_per_round=args.steps_per_round or AUTO_STEPS)
            user = SimulatedUser(label, seed=0)
            row = [dice(start, label)]
            for round_index in range(ROUNDS):
                if round_index == 0 or not args.clicks_in_round_1_only:
                    for click in user.clicks(session.mask > 0, 3, round_index):
                        session.add_click(ijk_from_kji(click.position), click.positive)
                session.step()
                row.append(dice(session.mask > 0, label))
            runs.append(row)
        results[name] = np.mean(runs, axis=0).round(4).tolist()
    return results


def options(parser) -> None:
    parser.add_argument("--steps-per-round", type=int, help="default: automatic")
    parser.add_argument("--clicks-in-round-1-only", action="store_true", help="later rounds run without new clicks")


if __name__ == "__main__":
    held_out.run(__doc__, dataset_dice, options)
