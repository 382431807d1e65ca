"""Table and curve of the semi-supervised runs, the paper's Tables 2 and 3 on the left atrium
(docs/results.md, "Tables 2 and 3"; research/NOTEBOOK.md, "Semi-supervised training").

    python -m research.experiments.semi_table docs/images/semi-supervised.png research/results/semi \
        research/results/semi-seed1 research/results/semi-ua-mt

Each folder holds one training seed's evaluation files (`mecca evaluate --json` or
`research.compare --json`), one per run (f0 = no left-atrium label; f0125, f025, f05, f1 = that
fraction of the 64 training cases labelled; a trailing u = the other training cases used as
unlabelled cases: eq. 6 for MECCA, UA-MT for the U-Net). Prints a markdown table (means over the
seeds, and each seed's round-5 Dice) and writes the Dice-after-round-5 curve.
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from research.compare import paired_tests  # noqa: E402

FRACTIONS = {"f0": 0.0, "f0125": 0.125, "f025": 0.25, "f05": 0.5, "f1": 1.0}


ROWS = {("mecca", False): "MECCA, labelled cases only", ("mecca", True): "MECCA + eq. 6 on the other cases",
        ("u-net", False): "U-Net, labelled cases only", ("u-net", True): "UA-MT (U-Net student) + the other cases"}


def load(folders: list[Path]) -> dict[tuple[str, bool, float], dict[Path, dict]]:
    """(method, with unlabelled cases, labelled fraction) -> {folder (one seed): the run's summary}."""
    runs: dict[tuple[str, bool, float], dict[Path, dict]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            for method, summary in json.loads(path.read_text())["methods"].items():
                key = (method, path.stem.endswith("u"), FRACTIONS[path.stem.rstrip("u")])
                runs.setdefault(key, {})[folder] = summary
    return runs


def unlabelled_effect(runs: dict[tuple[str, bool, float], dict[Path, dict]]) -> list[tuple[str, float, str, float, float]]:
    """For each method, share and seed that has both runs: (method, share, seed folder, round-5 Dice
    with the other cases minus without, Wilcoxon p of that difference paired by case)."""
    effects = []
    for (method, unlabeled, fraction), seeds in sorted(runs.items()):
        for folder, together in seeds.items() if unlabeled else ():
            alone = runs.get((method, False, fraction), {}).get(folder)
            if alone is not None:
                p = paired_tests({"methods": {"alone": alone, "together": together}}, "alone")["together"]["p_per_round"][-1]
                effects.append((method, fraction, folder.name,
                                together["dice_mean_per_round"][-1] - alone["dice_mean_per_round"][-1], p))
    return effects


def mecca_against_u_net(runs: dict[tuple[str, bool, float], dict[Path, dict]]) -> list[tuple[bool, float, float, float]]:
    """The paper's Table 2 comparison at each share, first seed of each: (with the other cases,
    share, MECCA's round-5 Dice minus the U-Net's or UA-MT's, Wilcoxon p paired by case)."""
    rows = []
    for (method, unlabeled, fraction), seeds in sorted(runs.items()):
        theirs = runs.get(("u-net", unlabeled, fraction))
        if method == "mecca" and theirs:
            ours, theirs = next(iter(seeds.values())), next(iter(theirs.values()))
            p = paired_tests({"methods": {"mecca": ours, "u-net": theirs}})["u-net"]["p_per_round"][-1]
            rows.append((unlabeled, fraction, ours["dice_mean_per_round"][-1] - theirs["dice_mean_per_round"][-1], p))
    return rows


def main(plot: str, folders: list[str]) -> None:
    runs = load([Path(f) for f in folders])
    print("| method | labelled cases (of 64) | unlabelled cases | Dice per round (mean of seeds, 16 validation cases) | "
          "round 5, each seed | misunderstanding, mean over rounds (%) | eq. 6 label accuracy, rounds 1-5 |")
    print("|---|---|---|---|---|---|---|")
    curves: dict[tuple[str, bool], list] = {row: [] for row in ROWS}
    for (method, unlabeled, fraction), by_folder in sorted(runs.items()):
        seeds, labelled = list(by_folder.values()), round(64 * fraction)
        dice = np.mean([m["dice_mean_per_round"] for m in seeds], axis=0)
        misunderstanding = np.mean([m["misunderstanding_rate_per_round"] for m in seeds])
        accuracy = [m["simulated_label_accuracy_per_round"] for m in seeds if "simulated_label_accuracy_per_round" in m]
        each_seed = ", ".join(f"{m['dice_mean_per_round'][-1]:.3f}" for m in seeds)
        print(f"| {ROWS[method, unlabeled]} | {labelled} | {64 - labelled if unlabeled else 0} | "
              f"{' '.join(f'{d:.3f}' for d in dice)} | {each_seed} | {100 * misunderstanding:.2f} | "
              f"{' '.join(f'{a:.2f}' for a in np.mean(accuracy, axis=0)) if accuracy else '-'} |")
        # no labels, or every case labelled: the same point on both of the method's curves
        for curve in (curves[method, unlabeled],) if 0 < fraction < 1 else (curves[method, False], curves[method, True]):
            curve.append((labelled, dice[-1], [m["dice_mean_per_round"][-1] for m in seeds]))
    print("\n| method | labelled cases | seed (folder) | round-5 Dice with the other cases minus without | Wilcoxon p (16 cases) |")
    print("|---|---|---|---|---|")
    for method, fraction, folder, difference, p in unlabelled_effect(runs):
        print(f"| {ROWS[method, True]} | {round(64 * fraction)} | {folder} | {difference:+.3f} | {p:.2g} |")
    print("\n| rows | labelled cases | MECCA round 5 minus the U-Net row's | Wilcoxon p (16 cases) |")
    print("|---|---|---|---|")
    for unlabeled, fraction, difference, p in mecca_against_u_net(runs):
        print(f"| {ROWS['mecca', unlabeled]} against {ROWS['u-net', unlabeled]} | {round(64 * fraction)} | {difference:+.3f} | {p:.2g} |")
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for (method, unlabeled), points in curves.items():
        if any(0 < p[0] < 64 for p in points):
            line, = axis.plot(*zip(*[p[:2] for p in sorted(points)]), ("s--" if unlabeled else "o-"), label=ROWS[method, unlabeled])
            for x, _, seeds in points:
                axis.plot([x] * len(seeds), seeds, ".", color=line.get_color(), alpha=0.4)
    axis.set_xscale("symlog", linthresh=8)
    axis.set_xticks([0, 8, 16, 32, 64], ["0", "8", "16", "32", "64"])
    axis.set_xlabel("labelled left-atrium training cases")
    axis.set_ylabel("Dice after round 5")
    if max(len(p[2]) for c in curves.values() for p in c) > 1:
        axis.set_title("mean of the training seeds; dots: each seed", fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(plot, dpi=120)
    print(f"wrote {plot}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
