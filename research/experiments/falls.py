"""Why a case's Dice falls after a round of clicks (research/NOTEBOOK.md, "A click never makes the mask
worse"): for every round after the first, the voxels it got newly wrong and newly right, how many of
the newly wrong ones are false positives, how far they lie from the round's clicks, how many lie in a
piece of the round's change that holds a click, and how many clicks the mask follows afterwards.

    python -m research.experiments.falls --dataset ../shared/data/Task04_Hippocampus --user interior \\
        --json research/results/falls-hippocampus-interior.json
"""

from __future__ import annotations

import argparse

import numpy as np
from mecca.checkpoint import load_model, resolve_device
from mecca.cli import add_device_option
from mecca.datasets import MSDDataset
from mecca.harness import MeccaMethod, simulate
from mecca.io import write_json
from mecca.resources import DEFAULT_MODEL, resource_path
from scipy import ndimage


def round_changes(before: np.ndarray, after: np.ndarray, label: np.ndarray, clicks, spacing_kji) -> dict:
    """What one round did to the mask (``before`` -> ``after``, bool) against ``label``."""
    newly_wrong = (after != label) & (before == label)
    not_clicked = np.ones(label.shape, bool)
    for click in clicks:
        not_clicked[click.position] = False
    distance_mm = ndimage.distance_transform_edt(not_clicked, sampling=spacing_kji)
    pieces, _ = ndimage.label(before != after)
    clicked_pieces = [pieces[c.position] for c in clicks if pieces[c.position]]
    in_clicked_piece = np.isin(pieces, clicked_pieces) & newly_wrong
    wrong = int(newly_wrong.sum())
    return {"newly_wrong": wrong, "newly_right": int(((after == label) & (before != label)).sum()),
            "newly_wrong_false_positive": int((newly_wrong & after).sum()),
            "newly_wrong_median_mm_to_click": round(float(np.median(distance_mm[newly_wrong])), 2) if wrong else None,
            "newly_wrong_in_a_clicked_piece": round(float(in_clicked_piece.sum() / max(wrong, 1)), 3),
            "signs": "".join("+" if c.positive else "-" for c in clicks),
            "clicks_followed": sum(int(after[c.position] == c.positive) for c in clicks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.experiments.falls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--user", choices=["edge", "interior"], default="interior")
    parser.add_argument("--model", help="MECCA model (default: bundled)")
    parser.add_argument("--cases", type=int, help="only the first N validation cases")
    parser.add_argument("--json", required=True)
    add_device_option(parser)
    args = parser.parse_args(argv)
    model = load_model(args.model or resource_path(*DEFAULT_MODEL), device=resolve_device(args.device), precision="auto")
    rows = []
    for case in MSDDataset.open(args.dataset).validation_cases(0.2)[: args.cases]:
        image, label = case.load()
        label = label > 0
        method = MeccaMethod(model)
        run = simulate(method, image, label, keep_masks=True, user=args.user)
        for index in range(1, len(run.masks)):
            rows.append({"case": case.name, "round": index + 1, "dice_change": round(run.dice[index] - run.dice[index - 1], 5),
                         **round_changes(run.masks[index - 1] > 0, run.masks[index] > 0, label,
                                         method.session.clicks_by_round[index], image.spacing_kji)})
    falls = [row for row in rows if row["dice_change"] < 0]
    wrong = sum(row["newly_wrong"] for row in falls)
    summary = {"case_rounds": len(rows), "falls": len(falls),
               "falling_rounds_newly_wrong_mean": round(wrong / max(len(falls), 1), 1),
               "falling_rounds_newly_right_mean": round(sum(r["newly_right"] for r in falls) / max(len(falls), 1), 1),
               "falling_rounds_false_positive_share": round(sum(r["newly_wrong_false_positive"] for r in falls) / max(wrong, 1), 3),
               "falling_rounds_median_mm_to_click": float(np.median([r["newly_wrong_median_mm_to_click"] for r in falls
                                                                     if r["newly_wrong_median_mm_to_click"] is not None]))
               if falls else None,
               "falling_rounds_in_a_clicked_piece": round(float(np.mean([r["newly_wrong_in_a_clicked_piece"] for r in falls])), 3)
               if falls else None,
               "falling_rounds_with_only_plus_clicks": sum(set(r["signs"]) == {"+"} for r in falls)}
    write_json({"dataset": args.dataset, "user": args.user, "model": str(args.model or "bundled"), "summary": summary,
                "rounds": rows}, args.json)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
