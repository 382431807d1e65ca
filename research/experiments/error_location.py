"""Where are the round-5 errors: stray islands, or a band along the object's surface?

On the held-out cases under the usual protocol (bundled model or --model, 5 rounds of 3 simulated
clicks), after round 5: Dice of the mask and of its largest connected component alone (what a
"keep the largest component" post-processing would score), mean false-negative and false-positive
voxels per case, the false positives outside the largest component, and the fraction of all wrong
voxels within 1 and 2 voxels of the true surface (scipy's Euclidean distance transform, in voxels):

    python -m research.experiments.error_location ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 --json OUT.json
"""

import numpy as np
from mecca.harness import MeccaMethod, simulate
from mecca.metrics import dice
from scipy import ndimage

from . import held_out

BANDS = (1, 2)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, components, range(1, count + 1))
    return components == 1 + int(np.argmax(sizes))


def _distance_to_surface(truth: np.ndarray) -> np.ndarray:
    """Voxels from each voxel to the nearest voxel across the true object's surface."""
    return np.where(truth, ndimage.distance_transform_edt(truth), ndimage.distance_transform_edt(~truth))


def dataset_results(root: str, model, args) -> dict:
    cases = held_out.validation_cases(root)
    rows = {"dice": [], "dice_largest_component": [], "false_negative_voxels": [], "false_positive_voxels": [],
            "false_positive_voxels_outside_largest_component": [],
            **{f"errors_within_{band}_voxel_of_surface": [] for band in BANDS}}
    for image, label in cases:
        method = MeccaMethod(model, lean_correction=args.lean_correction)
        rows["dice"].append(simulate(method, image, label).dice[-1])
        mask, truth = method.session.mask > 0, label > 0
        largest = _largest_component(mask)
        wrong = mask != truth
        distance = _distance_to_surface(truth)[wrong]
        rows["dice_largest_component"].append(dice(largest, truth))
        rows["false_negative_voxels"].append(np.count_nonzero(~mask & truth))
        rows["false_positive_voxels"].append(np.count_nonzero(mask & ~truth))
        rows["false_positive_voxels_outside_largest_component"].append(np.count_nonzero(mask & ~largest & ~truth))
        for band in BANDS:
            rows[f"errors_within_{band}_voxel_of_surface"].append(float((distance <= band).mean()) if distance.size else 1.0)
    return {name: round(float(np.mean(values)), 4) for name, values in rows.items()} | {"cases": len(cases)}


if __name__ == "__main__":
    held_out.run(__doc__, dataset_results)
