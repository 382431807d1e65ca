"""Do the advice regions point at the errors? Each round's five regions against the two guides a
user has for free (issue "Advice regions that find the errors", item 1).

The interior user gives MECCA 3 clicks per round, 5 rounds, on each held-out case (ROI = object box
+ 8 voxels, the bundled model or --model). After each round, on the SLIC supervoxels the round's
advice is chosen from, five regions are picked by each guide:

- ``mean``: the paper's advice (the five with the lowest mean action confidence);
- ``doubtful_voxels``: the five with the most expected wrong actions (sum of 1 - confidence);
- ``random``: five supervoxels drawn at random (seeded);
- ``boundary``: five supervoxels drawn at random among those the mask's boundary passes through;
- ``doubt_components``: not supervoxels but the five connected pieces of the voxels whose confidence
  is under ``--doubt-below`` with the most doubt (sum of 1 - confidence): regions that follow the
  doubt's shape.

Per guide and round: the share of the ROI's wrong voxels inside the five (``errors_covered``), of
its largest wrong component (``largest_error_covered``), the share of the five that hold any wrong
voxel (``regions_with_an_error``), and the share of the ROI the five take (``roi_share``: a guide
that covers more of the ROI covers more errors for free). Means over cases:

    python -m research.experiments.advice_guides ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 \\
        --json research/results/advice-guides.json
"""

import numpy as np
from mecca.advice import ADVICE_COUNT, Supervoxels, doubt_pieces, rank_regions
from mecca.geometry import ijk_from_kji, label_box
from mecca.session import InteractiveSession
from mecca.users import SimulatedUser
from scipy import ndimage

from . import held_out

GUIDES = ("mean", "doubtful_voxels", "random", "boundary", "doubt_components")
ROUNDS, CLICKS_PER_ROUND = 5, 3


def guide_labels(guide: str, labels: np.ndarray, confidence: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """The supervoxel labels the guide points at (ADVICE_COUNT of them, fewer where there are fewer)."""
    if guide in ("mean", "doubtful_voxels"):
        return np.array([r.label for r in rank_regions(Supervoxels.from_labels(labels), confidence, ADVICE_COUNT, guide)])
    candidates = np.unique(labels)
    if guide == "boundary":
        edge = mask ^ ndimage.binary_erosion(mask)
        candidates = np.unique(labels[edge]) if edge.any() else candidates
    return rng.choice(candidates, min(ADVICE_COUNT, candidates.size), replace=False)


def round_figures(labels: np.ndarray, chosen: np.ndarray, errors: np.ndarray, largest: np.ndarray) -> dict:
    inside = np.isin(labels, chosen)
    holding = len(np.intersect1d(np.unique(labels[errors]), chosen))
    return {"errors_covered": float(errors[inside].sum() / max(errors.sum(), 1)),
            "largest_error_covered": float(largest[inside].sum() / max(largest.sum(), 1)),
            "regions_with_an_error": holding / max(len(chosen), 1),
            "roi_share": float(inside.mean())}


def case_figures(model, image, label, lean_correction: float, seed: int, doubt_below: float) -> dict:
    """{guide: [per-round figures]} for one case."""
    label = label > 0
    session = InteractiveSession(image, model, roi=label_box(label), lean_correction=lean_correction)
    user, rng = SimulatedUser(label, seed=seed, style="interior"), np.random.default_rng(seed)
    figures = {guide: [] for guide in GUIDES}
    for round_index in range(ROUNDS):
        for click in user.clicks(session.mask > 0, CLICKS_PER_ROUND, round_index):
            session.add_click(ijk_from_kji(click.position), click.positive)
        session.step()
        region, labels = session.advice_supervoxels()
        _, confidence = session.confidence_region()
        mask = session.mask[region] > 0
        errors = mask != label[region]
        components, count = ndimage.label(errors)
        largest = components == (np.argmax(np.bincount(components.ravel())[1:]) + 1) if count else errors
        for guide in GUIDES:
            if guide == "doubt_components":  # the session's own pieces (advice.doubt_pieces): labels 1..5 are the kept ones
                pieces = doubt_pieces(confidence, doubt_below).labels
                regions, chosen = pieces, np.unique(pieces[pieces > 0])
            else:
                regions, chosen = labels, guide_labels(guide, labels, confidence, mask, rng)
            figures[guide].append(round_figures(regions, chosen, errors, largest))
    return figures


def dataset_results(root, model, args) -> dict:
    cases = [case_figures(model, image, label, args.lean_correction, seed, args.doubt_below)
             for seed, (image, label) in enumerate(held_out.validation_cases(root))]
    results = {"cases": len(cases)}
    for guide in GUIDES:
        results[guide] = {figure: np.round(np.mean([[r[figure] for r in case[guide]] for case in cases], axis=0), 4).tolist()
                          for figure in cases[0][guide][0]}
    return results


def add_arguments(parser) -> None:
    parser.add_argument("--doubt-below", type=float, default=0.85,
                        help="doubt_components: the confidence under which a voxel is doubtful (default 0.85)")


if __name__ == "__main__":
    held_out.run(__doc__, dataset_results, add_arguments)
