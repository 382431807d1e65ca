"""Fine-tuning on a structure the model does not know, as the Slicer panel does it, scored on that
structure's validation cases before and after under both simulated users (issue 37's proxy).

The model given must not have been trained on the structure: stage 8 (git show
b418545:Resources/Models/mecca.safetensors) never saw a head-and-neck CT, so each of the seven
OpenKBP organs is a left-out structure for it.

    python -m research.experiments.new_structure ../shared/data/OpenKBP_HeadNeckCT --label 7 \
        --model runs/newstructure/stage8.safetensors --out runs/newstructure/mandible-default \
        --json research/results/new-structure-mandible-default.json [-- <mecca train options>]

Steps: the first ``--train-cases`` training patients that hold the label are written as a binary
MSD folder (the original images, the structure's mask: what the panel exports from one segment);
``mecca train --init MODEL --validation-fraction 0`` fine-tunes on them (the panel's command, plus
any options after ``--``; with ``--interactive-cases N`` the next N training patients holding the
organ join as cases segmented interactively and never labelled, as the panel exports them: the
image and the clicks an interior user gave the starting model over 5 rounds of 3, trained through
eq. 6 with ``--unlabeled``); ``mecca evaluate`` scores the model before and after on the first
``--cases`` validation patients with the label, each simulated user. Peak memory is the training
process's (ru_maxrss of the children).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mecca.checkpoint import load_model
from mecca.datasets import MSDDataset
from mecca.geometry import ijk_from_kji, label_box
from mecca.io import read_volume, write_json, write_volume
from mecca.session import InteractiveSession
from mecca.users import SimulatedUser

USERS = ("interior", "edge")


def write_fine_tuning_cases(dataset: MSDDataset, label: int, count: int, folder: Path) -> list[str]:
    """The first ``count`` training cases holding ``label``, as a binary MSD folder; their names."""
    entries, names = [], []
    for case in dataset.training_cases(0.2):
        label_volume = read_volume(case.label)
        mask = label_volume.array == label
        if not mask.any():
            continue
        write_volume(label_volume.with_array(mask.astype(np.uint8)), folder / "labelsTr" / f"{case.name}.nii.gz")
        entries.append({"image": str(case.image.resolve()), "label": f"./labelsTr/{case.name}.nii.gz"})
        names.append(case.name)
        if len(names) == count:
            break
    write_json({"name": f"{dataset.name}-label{label}", "tensorImageSize": "3D", "modality": dataset.info.get("modality", {}),
                "labels": {"0": "background", "1": "foreground"}, "numTraining": len(entries),
                "training": entries, "test": []}, folder / "dataset.json")
    return names


def write_interactive_cases(dataset: MSDDataset, label: int, skip: list[str], count: int, folder: Path,
                            model_path: str, rounds: int = 5, clicks_per_round: int = 3) -> list[str]:
    """The first ``count`` training cases holding ``label`` and not in ``skip``, as the panel writes
    a case segmented interactively: the image and the clicks (RAS mm, by round) a simulated interior
    user gave the model; their names."""
    model = load_model(model_path).prepare_for_inference()
    ras_from_lps = np.array([-1.0, -1.0, 1.0])
    entries, names = [], []
    for seed, case in enumerate(c for c in dataset.training_cases(0.2) if c.name not in skip):
        image, mask = case.load((label,))
        mask = mask > 0
        if not mask.any():
            continue
        session = InteractiveSession(image, model, roi=label_box(mask))
        user, clicks = SimulatedUser(mask, seed=seed, style="interior"), []
        for round_index in range(rounds):
            for click in user.clicks(session.mask > 0, clicks_per_round, round_index):
                ijk = ijk_from_kji(click.position)
                session.add_click(ijk, click.positive)
                clicks.append({"point": [round(float(v), 4) for v in ras_from_lps * image.index_to_world(ijk)],
                               "positive": bool(click.positive), "round": round_index + 1})
            session.step()
        write_json({"coordinate_system": "RAS", "clicks": clicks}, folder / "clicksTr" / f"{case.name}.json")
        entries.append({"image": str(case.image.resolve()), "clicks": f"./clicksTr/{case.name}.json"})
        names.append(case.name)
        if len(names) == count:
            break
    write_json({"name": f"{dataset.name}-label{label}-interactive", "tensorImageSize": "3D",
                "modality": dataset.info.get("modality", {}), "labels": {"0": "background", "1": "foreground"},
                "numTraining": len(entries), "training": entries, "test": []}, folder / "dataset.json")
    return names


def mecca(*arguments) -> None:
    subprocess.run([sys.executable, "-m", "mecca.cli", *map(str, arguments)], check=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    train_options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="MSD folder with the structure's label")
    parser.add_argument("--label", type=int, required=True, help="the structure's label value")
    parser.add_argument("--model", required=True, help="a model that was not trained on the structure")
    parser.add_argument("--out", required=True, help="work folder (fine-tuning cases, model, evaluations)")
    parser.add_argument("--json", required=True, help="results file")
    parser.add_argument("--train-cases", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24, help="validation patients scored (the first N by name)")
    parser.add_argument("--interactive-cases", type=int, default=0,
                        help="further training patients given as segmented interactively, never labelled (eq. 6)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    dataset = MSDDataset.open(args.dataset)
    names = write_fine_tuning_cases(dataset, args.label, args.train_cases, out / "cases")
    interactive = []
    if args.interactive_cases:
        interactive = write_interactive_cases(dataset, args.label, names, args.interactive_cases, out / "interactive",
                                              args.model)
        train_options = ["--unlabeled", str(out / "interactive"), *train_options]
    tuned = out / "fine-tuned.safetensors"
    started = time.perf_counter()
    mecca("train", "--dataset", out / "cases", "--init", args.model, "--out", tuned, "--validation-fraction", 0,
          "--restart", *train_options)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"dataset": dataset.name, "label": args.label, "model": args.model, "fine_tuning_cases": names,
              "interactive_cases": interactive,
              "train_options": train_options, "fine_tuning_s": round(seconds, 1), "peak_memory_mb": round(peak_mb),
              "validation_cases": args.cases, "users": {}}
    for user in USERS:
        scores = out / f"evaluation-{user}.json"
        mecca("evaluate", "--dataset", args.dataset, "--labels", args.label, "--cases", args.cases, "--user", user,
              "--model", args.model, "--model", tuned, "--json", scores)
        before, after = json.loads(scores.read_text())["methods"].values()
        result["users"][user] = {"before": before["dice_mean_per_round"], "after": after["dice_mean_per_round"]}
        print(f"{user}: round 5 before {before['dice_mean_per_round'][-1]:.3f} after {after['dice_mean_per_round'][-1]:.3f}",
              flush=True)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
