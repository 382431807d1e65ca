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
any options after ``--``); ``mecca evaluate`` scores the model before and after on the first
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
from mecca.datasets import MSDDataset
from mecca.io import read_volume, write_json, write_volume

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
    args = parser.parse_args(argv)
    out = Path(args.out)
    dataset = MSDDataset.open(args.dataset)
    names = write_fine_tuning_cases(dataset, args.label, args.train_cases, out / "cases")
    tuned = out / "fine-tuned.safetensors"
    started = time.perf_counter()
    mecca("train", "--dataset", out / "cases", "--init", args.model, "--out", tuned, "--validation-fraction", 0,
          "--restart", *train_options)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"dataset": dataset.name, "label": args.label, "model": args.model, "fine_tuning_cases": names,
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
