"""Structures no model was trained on, made from the shared scans: one object per scan, adjacent
SLIC supervoxels or an intensity component (mecca.synthetic, the kinds that owe nothing to the
expert label), drawn with a seed of its own so the objects differ from any drawn in training.

    python -m research.experiments.made_structures ../shared/data/Task04_Hippocampus runs/made/hippocampus-val
    python -m research.experiments.made_structures ../shared/data/Task04_Hippocampus runs/made/hippocampus-tune \
        --split training --cases 8

The copy is an MSD folder whose images are the original files (absolute paths) and whose labels are
the objects; evaluate it with ``python -m research.compare --dataset FOLDER --split all`` (choose the
random walker's beta on a ``--split training`` copy first: research/NOTEBOOK.md, "Made structures").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from mecca.datasets import MSDDataset
from mecca.environment import normalize_image
from mecca.io import read_volume, write_json, write_volume
from mecca.synthetic import synthetic_object

KINDS = ("supervoxels", "threshold")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="MSD folder")
    parser.add_argument("target", help="new folder for the made dataset")
    parser.add_argument("--split", choices=["validation", "training"], default="validation",
                        help="the scans `mecca train` holds out (default) or trains on (for tuning)")
    parser.add_argument("--cases", type=int, help="only the first N scans of the split")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the objects (default: 2026)")
    args = parser.parse_args(argv)
    if args.cases is not None and args.cases < 1:
        parser.error(f"--cases must be at least 1, got {args.cases}")
    dataset = MSDDataset.open(args.source)
    scans = dataset.validation_cases(0.2) if args.split == "validation" else dataset.training_cases(0.2)
    out = Path(args.target)
    if out.exists():
        parser.error(f"{out} exists; choose a new folder")
    entries = []
    for number, case in enumerate(scans[: args.cases] if args.cases else scans):
        image, label = read_volume(case.image), read_volume(case.label)
        rng = np.random.default_rng([args.seed, number])
        made = synthetic_object(normalize_image(image.array), label.array, rng, KINDS)
        if np.array_equal(made, label.array > 0):  # no object could be drawn: the label came back
            print(f"{case.name}: no object drawn, left out", flush=True)
            continue
        name = f"labelsTr/{case.name}_made.nii.gz"
        write_volume(label.with_array(made.astype(np.uint8)), out / name)
        entries.append({"image": str(case.image.resolve()), "label": f"./{name}"})
        print(f"{case.name}: {int(made.sum())} voxels", flush=True)
    manifest = {"name": f"{dataset.name}-made-{args.split}", "description": __doc__.split("\n\n")[0],
                "labels": {"0": "background", "1": "made structure"}, "training": entries,
                "numTraining": len(entries)}
    write_json(manifest, out / "dataset.json")
    print(f"{len(entries)} made structures in {out}")


if __name__ == "__main__":
    main()
