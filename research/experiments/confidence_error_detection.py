"""Does the confidence overlay point at the mask's remaining errors, and does it say more than the
distance to the mask's edge (where most errors of any segmentation lie)?

After each round of the usual protocol (validation split, simulated user, 5 rounds x 3 clicks, the
bundled model or --model as a session runs it), each ROI voxel is scored as a suspected error by 1 - its
confidence (the overlay), and by closeness to the mask's edge (a baseline that knows nothing of the
image); ROC AUC against the voxels the mask has wrong, over the whole ROI and over the band within
3 voxels of the edge, where a user looks. Means over cases per round:

    python -m research.experiments.confidence_error_detection ../shared/data/Task04_Hippocampus \
        ../shared/data/LeftAtrium2018 --json OUT.json [--model M]
"""

import numpy as np
from mecca.harness import MeccaMethod, simulate
from mecca.metrics import roc_auc
from scipy import ndimage

from . import held_out

EDGE_BAND = 3  # voxels


def round_scores(confidence: np.ndarray, mask: np.ndarray, label: np.ndarray) -> dict[str, float]:
    error = mask != label
    edge_distance = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    band = edge_distance <= EDGE_BAND
    return {"confidence, ROI": roc_auc(1 - confidence.ravel(), error.ravel()),
            "edge distance, ROI": roc_auc(-edge_distance.ravel(), error.ravel()),
            "confidence, edge band": roc_auc(1 - confidence[band], error[band]),
            "edge distance, edge band": roc_auc(-edge_distance[band], error[band])}


def dataset_scores(root: str, model, args) -> dict[str, list[float]]:
    cases = []
    for image, label in held_out.validation_cases(root):
        rounds = []

        def on_round(method, _clicks, _dice, label=label, rounds=rounds):
            region = method.region
            rounds.append(round_scores(method.session.confidence_map()[region], method.session.mask[region] > 0,
                                       label[region] > 0))

        simulate(MeccaMethod(model, lean_correction=args.lean_correction), image, label, on_round=on_round)
        cases.append(rounds)
    return {name: [round(float(np.nanmean([case[r][name] for case in cases])), 3) for r in range(len(cases[0]))]
            for name in cases[0][0]} | {"cases": len(cases)}


if __name__ == "__main__":
    held_out.run(__doc__, dataset_scores)
