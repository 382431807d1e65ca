"""Seeds from clicks, and the random walker on them: what the classical seeded tools see, and a
structure-agnostic first estimate that a session can start from.

A click becomes a ball of ``SEED_RADIUS`` voxels (+ foreground, - background; a later click
paints over an earlier one), and the ROI's border is a background shell, as Slicer users paint
seeds for Grow from seeds.
"""

from __future__ import annotations

import numpy as np

from .clicks import Click

SEED_RADIUS = 2  # voxels
FOREGROUND, BACKGROUND = 1, 2  # seed labels (0: unlabelled)
RANDOM_WALKER_BETA = 130.0  # scikit-image's default edge sensitivity


def seed_map(shape: tuple[int, int, int], clicks: list[Click], offset=(0, 0, 0)) -> np.ndarray:
    """int16 seeds on the box of ``shape`` starting at ``offset`` (clicks in whole-image indices)."""
    seeds = np.zeros(shape, np.int16)
    seeds[0], seeds[-1], seeds[:, 0], seeds[:, -1], seeds[:, :, 0], seeds[:, :, -1] = (BACKGROUND,) * 6
    for click in clicks:
        centre = [p - o for p, o in zip(click.position, offset)]
        window = tuple(slice(max(c - SEED_RADIUS, 0), min(c + SEED_RADIUS + 1, s)) for c, s in zip(centre, shape))
        if any(w.stop <= w.start for w in window):
            continue  # the click lies outside the box
        grids = np.ogrid[window]
        ball = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= SEED_RADIUS ** 2
        seeds[window][ball] = FOREGROUND if click.positive else BACKGROUND
    return seeds


def random_walker_probability(image_norm: np.ndarray, seeds: np.ndarray, spacing_kji=(1.0, 1.0, 1.0),
                              beta: float = RANDOM_WALKER_BETA) -> np.ndarray:
    """scikit-image's random walker (Grady 2006) on a normalised image: the foreground probability
    (float32; 0 everywhere without a foreground seed). ``spacing_kji`` in numpy axis order."""
    import warnings

    from skimage.segmentation import random_walker

    if not (seeds == FOREGROUND).any():
        return np.zeros(seeds.shape, np.float32)
    spacing = np.asarray(spacing_kji, float) / min(spacing_kji)
    with warnings.catch_warnings():  # its probabilities may leave [0, 1] by the solver's tolerance: harmless here
        warnings.filterwarnings("ignore", message="The probability range is outside", category=UserWarning)
        probability = random_walker(image_norm, seeds, beta=beta, mode="cg_j", tol=1e-3, return_full_prob=True,
                                    spacing=spacing, channel_axis=None)
    return probability[0].astype(np.float32)
