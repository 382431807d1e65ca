"""How much Dice does a model lose when the scan's intensities change as another scanner or sequence
would change them?

The usual protocol (validation split, simulated user, 5 rounds x 3 clicks, the bundled model or
--model as a session runs it) on each held-out case as it is and under fixed intensity changes of
the whole scan, its intensities u first mapped to [0, 1] between the 0.5 and 99.5 percentiles:
inverted contrast (1 - u), gamma 2 (u ** 2), a linear bias field (u (1 + 0.4 a + 0.3 b), a and b
running from -1 to 1 along the first two array axes) and Gaussian noise (sd 0.1, seeded per
case). Mean Dice per round:

    python -m research.experiments.intensity_changes ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 --json OUT.json [--model M]
"""

import numpy as np
from mecca.harness import MeccaMethod, simulate

from . import held_out

CHANGES = ("none", "inverted", "gamma 2", "bias field", "noise")


def changed(array: np.ndarray, change: str, seed: int) -> np.ndarray:
    low, high = np.percentile(array, [0.5, 99.5])
    unit = np.clip((array.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)
    if change == "none":
        return array
    if change == "inverted":
        return 1.0 - unit
    if change == "gamma 2":
        return unit**2
    if change == "bias field":
        k, j, _ = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in unit.shape], indexing="ij")
        return unit * (1.0 + 0.4 * k + 0.3 * j)
    if change == "noise":
        return unit + np.random.default_rng(seed).normal(0.0, 0.1, unit.shape).astype(np.float32)
    raise ValueError(f"unknown change {change!r}; choose from {', '.join(CHANGES)}")


def dataset_dice(root: str, model, args) -> dict[str, list[float]]:
    cases = held_out.validation_cases(root)
    results = {}
    for change in CHANGES:
        runs = [simulate(MeccaMethod(model, lean_correction=args.lean_correction),
                         image.with_array(changed(image.array, change, seed)), label).dice
                for seed, (image, label) in enumerate(cases)]
        results[change] = np.mean(runs, axis=0).round(4).tolist()
    return results | {"cases": len(cases)}


if __name__ == "__main__":
    held_out.run(__doc__, dataset_dice)
