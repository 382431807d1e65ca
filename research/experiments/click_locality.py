"""Clicks that make the mask worse (research/NOTEBOOK.md): one case's errors round by round, and an
evaluation in which each round after the first may change only the voxels near its new clicks.

    python -m research.experiments.click_locality case MSD_FOLDER CASE_NAME [LEAN_CORRECTION]
        false-positive / false-negative voxels per round of the bundled model on one held-out case
        (lean correction 0 unless given: the sessions before it existed)
    python -m research.experiments.click_locality evaluate R_MM <mecca evaluate options>
        mecca evaluate, each round after the first keeping the voxels farther than R_MM from all of
        its new clicks as they were (research/NOTEBOOK.md adds --lean-correction 0: measured before it existed)
"""

import sys

import numpy as np
from mecca import cli
from mecca.checkpoint import load_model
from mecca.geometry import box_slices
from mecca.harness import MeccaMethod, simulate
from mecca.io import MSDDataset
from mecca.resources import DEFAULT_MODEL, resource_path
from mecca.session import InteractiveSession
from scipy import ndimage


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


def keeping_far_voxels(radius_mm: float):
    """InteractiveSession.step, but a round after the first leaves the voxels farther than
    ``radius_mm`` from all of its new clicks as they were."""
    plain_step = InteractiveSession.step

    def local_step(session):
        new_clicks = list(session.pending_clicks)
        box = session.current_box()
        region = box_slices(box)
        before = session._p[region].copy()
        summary = plain_step(session)
        if session.rounds > 1 and new_clicks:
            away = np.ones(before.shape, bool)
            for click in new_clicks:
                away[tuple(p - lo for p, lo in zip(click.position, box[0]))] = False
            far = ndimage.distance_transform_edt(away, sampling=session.image.spacing_kji) > radius_mm
            session._p[region][far] = before[far]
        return summary

    return local_step


if __name__ == "__main__":
    if sys.argv[1:2] == ["case"] and len(sys.argv) in (4, 5):
        case_errors(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else 0.0)
    elif sys.argv[1:2] == ["evaluate"] and len(sys.argv) >= 4:
        InteractiveSession.step = keeping_far_voxels(float(sys.argv[2]))
        sys.exit(cli.main(["evaluate", *sys.argv[3:]]))
    else:
        sys.exit(__doc__)
