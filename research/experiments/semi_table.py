"""Table and curve of the semi-supervised runs (research/NOTEBOOK.md, "Semi-supervised training").

    python -m research.experiments.semi_table docs/images/semi-supervised.png research/results/semi research/results/semi-seed1

Each folder holds one training seed's `mecca evaluate --json` files, one per run (f0 = no
left-atrium label; f0125, f025, f05, f1 = that fraction of the 64 training cases labelled; a
trailing u = the other training cases used as unlabelled cases). Prints a markdown table (means
over the seeds, and each seed's round-5 Dice) and writes the Dice-after-round-5 curve.
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FRACTIONS = {"f0": 0.0, "f0125": 0.125, "f025": 0.25, "f05": 0.5, "f1": 1.0}


def load(folders: list[Path]) -> dict[tuple[float, bool], list[dict]]:
    """(labelled fraction, with unlabelled cases) -> the MECCA summary of each seed that has the run."""
    runs: dict[tuple[float, bool], list[dict]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            key = (FRACTIONS[path.stem.rstrip("u")], path.stem.endswith("u"))
            runs.setdefault(key, []).append(json.loads(path.read_text())["methods"]["mecca"])
    return runs


def main(plot: str, folders: list[str]) -> None:
    runs = load([Path(f) for f in folders])
    print("| labelled cases (of 64) | unlabelled cases | Dice per round (mean of seeds, 16 validation cases) | "
          "round 5, each seed | misunderstanding, mean over rounds (%) | eq. 6 label accuracy, rounds 1-5 |")
    print("|---|---|---|---|---|---|")
    curves = {False: [], True: []}
    for (fraction, unlabeled), seeds in sorted(runs.items()):
        labelled = round(64 * fraction)
        dice = np.mean([m["dice_mean_per_round"] for m in seeds], axis=0)
        misunderstanding = np.mean([m["misunderstanding_rate_per_round"] for m in seeds])
        accuracy = np.mean([m["simulated_label_accuracy_per_round"] for m in seeds], axis=0)
        each_seed = ", ".join(f"{m['dice_mean_per_round'][-1]:.3f}" for m in seeds)
        print(f"| {labelled} | {64 - labelled if unlabeled else 0} | {' '.join(f'{d:.3f}' for d in dice)} | "
              f"{each_seed} | {100 * misunderstanding:.2f} | "
              f"{' '.join(f'{a:.2f}' for a in accuracy)} |")
        for curve in (curves[unlabeled],) if 0 < fraction < 1 else (curves[False], curves[True]):
            curve.append((labelled, dice[-1], [m["dice_mean_per_round"][-1] for m in seeds]))
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for unlabeled, style, label in ((False, "o-", "labelled cases only"), (True, "s--", "+ the other cases unlabelled (eq. 6)")):
        points = sorted(curves[unlabeled])
        line, = axis.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        for x, _, seeds in points:
            axis.plot([x] * len(seeds), seeds, ".", color=line.get_color(), alpha=0.4)
    axis.set_xscale("symlog", linthresh=8)
    axis.set_xticks([0, 8, 16, 32, 64], ["0", "8", "16", "32", "64"])
    axis.set_xlabel("labelled left-atrium training cases")
    axis.set_ylabel("Dice after round 5")
    if max(len(p[2]) for c in curves.values() for p in c) > 1:
        axis.set_title("mean of the training seeds; dots: each seed", fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(plot, dpi=120)
    print(f"wrote {plot}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
