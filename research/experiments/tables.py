"""Markdown tables for research/NOTEBOOK.md from `mecca evaluate --json` files.

    python -m research.experiments.tables research/results/hippocampus.json research/results/left-atrium.json
"""

import json
import sys


def number(value, spec: str) -> str:
    """A metric as text; null (undefined, e.g. no voxel passed delta) as n/a."""
    return "n/a" if value is None else format(value, spec)


def table(path: str) -> str:
    result = json.load(open(path))
    rounds = result["rounds"]
    lines = [f"**{result['dataset']}**: {result['cases']} validation cases, {rounds} rounds x "
             f"{result['clicks_per_round']} clicks", "",
             "| method | Dice per round (mean ± sd at round 5) | ASSD mm, round 5 | misunderstanding rate per round (%) | "
             "mean | s/round (median) |", "|---|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        if not m.get("cases"):
            lines.append(f"| {name} | failed on every case | | | | |")
            continue
        dice = " ".join(f"{d:.3f}" for d in m["dice_mean_per_round"])
        lines.append(f"| {name} | {dice} (± {m['dice_sd_per_round'][-1]:.3f}) | {m['assd_mm_mean_per_round'][-1]:.2f} | "
                     f"{' '.join(f'{100 * r:.2f}' for r in m['misunderstanding_rate_per_round'])} | "
                     f"{100 * sum(m['misunderstanding_rate_per_round']) / rounds:.2f} | "
                     f"{m['seconds_per_round_median']:.3f} |")
    eq6 = {name: m for name, m in result["methods"].items() if "simulated_label_accuracy_per_round" in m}
    if eq6:
        lines += ["", "| method | confidence AUC (right vs wrong steps), per round | eq. 6 labels: share of moved voxels "
                      "used (δ 0.8) | their accuracy | share of the true foreground used labelled foreground |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {' '.join(number(a, '.2f') for a in m.get('confidence_auc_per_round', []))} | "
                  f"{' '.join(f'{c:.2f}' for c in m['simulated_label_coverage_per_round'])} | "
                  f"{' '.join(number(a, '.3f') for a in m['simulated_label_accuracy_per_round'])} | "
                  f"{' '.join(number(r, '.2f') for r in m.get('simulated_label_foreground_recall_per_round', []))} |"
                  for name, m in eq6.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(path) for path in sys.argv[1:]))
