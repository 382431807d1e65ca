"""Do the "click here next" regions help? (The paper's interaction guide, section 4.4 and Figure 5.)

Two simulated users give MECCA one click per round on the held-out cases (ROI = object box + 8
voxels, the bundled model or --model). Both give the same first click (the deepest point of the
largest error). After that, the *whole-ROI* user clicks the deepest point of the largest error in
the ROI; the *guided* user looks only inside the advice regions and clicks, with ``--rule first``,
the deepest error voxel of the first region (in rank order) that holds an error, or with ``--rule
largest`` the deepest point of the largest error piece inside any of the five, or with ``--rule
deepest`` the error voxel inside the five that lies deepest in its whole error region (a person
looking inside the regions clicks where the error seen there is thickest); where none holds an
error, the whole-ROI click.
Reported per user: mean Dice after each click and the clicks needed to reach --target Dice (cases
that never reach it within --clicks count as --clicks + 1). ``--rankings`` chooses how the guided
users' regions are ranked (mecca.advice.RANKINGS; one guided user each):

    python -m research.experiments.interaction_guide ../shared/data/Task04_Hippocampus ../shared/data/LeftAtrium2018 \\
        --json research/results/interaction-guide.json
"""

import numpy as np
from mecca.advice import RANKINGS
from mecca.clicks import Click
from mecca.geometry import box_slices, ijk_from_kji, kji_from_ijk, label_box
from mecca.metrics import dice
from mecca.session import InteractiveSession
from mecca.users import interior_clicks
from scipy import ndimage

from . import held_out


def next_click(session: InteractiveSession, label: np.ndarray, box, guided: bool, rule: str = "first"):
    """(the click, its numpy (k, j, i) position in the image) of the user's next click, or None when
    the ROI has no error left."""
    region = box_slices(box)
    truth, mask = label[region], session.mask[region] > 0
    errors, false_negative = truth != mask, truth & ~mask
    if not errors.any():
        return None
    if guided and session.rounds:
        ranks = session.advice_map()[region]
        advice = ranks > 0
        if rule == "deepest" and (errors & advice).any():
            depth = ndimage.distance_transform_edt(np.pad(errors, 1))[1:-1, 1:-1, 1:-1]
            point = tuple(int(p) for p in np.unravel_index(int(np.argmax(np.where(advice, depth, 0))), errors.shape))
            return Click(point, bool(false_negative[point])), tuple(int(p + lo) for p, lo in zip(point, box[0]))
        if rule == "largest":
            if (errors & advice).any():
                errors = errors & advice  # the interior click takes the largest piece of these
        elif rule == "first":
            for rank in sorted(int(r) for r in np.unique(ranks) if r):
                inside = errors & (ranks == rank)
                if inside.any():
                    errors = inside
                    break
    click = interior_clicks(errors, false_negative, 1)[0]
    return click, tuple(int(p + lo) for p, lo in zip(click.position, box[0]))


def case_curve(model, image, label, clicks: int, guided: bool, lean_correction: float,
               ranking: str = "mean", rule: str = "first") -> list[float]:
    label = label > 0
    lo_ijk, hi_ijk = label_box(label)
    box = (kji_from_ijk(lo_ijk), kji_from_ijk(hi_ijk))
    session = InteractiveSession(image, model, roi=(lo_ijk, hi_ijk), lean_correction=lean_correction,
                                 advice_ranking=ranking)
    curve = []
    for _ in range(clicks):
        chosen = next_click(session, label, box, guided, rule)
        if chosen is None:
            curve.append(curve[-1] if curve else 1.0)
            continue
        click, position = chosen
        session.add_click(ijk_from_kji(position), click.positive)
        session.step()
        curve.append(dice(session.mask > 0, label))
    return curve


def dataset_results(root, model, args) -> dict:
    results = {}
    cases = held_out.validation_cases(root)
    users = [("whole ROI", False, "mean")] + [(f"guided by the advice regions ({ranking})", True, ranking)
                                              for ranking in args.rankings.split(",")]
    for user, guided, ranking in users:
        curves = np.array([case_curve(model, image, label, args.clicks, guided, args.lean_correction, ranking, args.rule)
                           for image, label in cases])
        reached = [int(np.argmax(c >= args.target)) + 1 if (c >= args.target).any() else args.clicks + 1
                   for c in curves]
        results[user] = {"cases": len(cases), "dice_mean_per_click": np.round(curves.mean(0), 4).tolist(),
                         "clicks_to_target_mean": round(float(np.mean(reached)), 2),
                         "cases_reaching_target": int(np.sum(np.array(reached) <= args.clicks))}
    return results


def add_arguments(parser) -> None:
    parser.add_argument("--clicks", type=int, default=15, help="clicks per case, one per round (default 15)")
    parser.add_argument("--target", type=float, default=0.85, help="the Dice to reach (default 0.85)")
    parser.add_argument("--rule", choices=("first", "largest", "deepest"), default="first",
                        help="the guided user's click: in the first region holding an error (default), in the "
                             "largest error piece inside the five, or at the error voxel inside them deepest in its error")
    parser.add_argument("--rankings", default="mean", help="comma-separated advice rankings of the guided users "
                        f"(of {', '.join(RANKINGS)}; default: mean, the paper's)")


if __name__ == "__main__":
    held_out.run(__doc__, dataset_results, add_arguments)
