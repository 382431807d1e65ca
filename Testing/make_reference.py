#!/usr/bin/env python
"""Make the stored data of the regression tests (Testing/test_slicer_replay.py, test_regression.py).

    python Testing/make_reference.py clicks      # Testing/Data/hippocampus_014_clicks.json
    python Testing/make_reference.py reference   # Testing/Data/hippocampus_014_reference.nii.gz
    python Testing/make_reference.py dice        # Testing/Data/regression_dice.json

The click script does not depend on any model: the engine's seeded simulated user clicks against a
fixed sequence of imperfect masks (nothing, the label grown by 2 voxels, the label shrunk by 2
voxels), which gives + and - clicks near the true boundary. The reference mask is what the Slicer
module's Logic makes of that script with the bundled model; make it again (and commit it) only when
the bundled model changes on purpose. Both files use the case's own geometry (RAS = Slicer's world).

The data is the real scan hippocampus_014 of ../shared/data/Task04_Hippocampus (or $MECCA_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parent
ROOT = TESTING.parent
CASE = "hippocampus_014"
CLICK_SCRIPT = TESTING / "Data" / f"{CASE}_clicks.json"
REFERENCE_MASK = TESTING / "Data" / f"{CASE}_reference.nii.gz"
CLICKS_PER_ROUND = 3
REGRESSION_DICE = TESTING / "Data" / "regression_dice.json"
REGRESSION_CASES = {"Task04_Hippocampus": 3, "LeftAtrium2018": 2}  # the first held-out cases of each
RAS_FROM_LPS = np.array([-1.0, -1.0, 1.0])


def data_dir(dataset: str = "Task04_Hippocampus") -> Path:
    return Path(os.environ.get("MECCA_DATA", ROOT.parent / "shared" / "data")) / dataset


def regression_cases(dataset: str):
    """The first held-out (validation) cases of a shared dataset, by name."""
    from mecca.datasets import MSDDataset

    return MSDDataset.open(data_dir(dataset)).validation_cases(0.2)[: REGRESSION_CASES[dataset]]


def regression_dice(model) -> dict:
    """Dice per round of the simulated user (5 rounds x 3 clicks) on the regression cases."""
    from mecca.harness import simulate_mecca

    result = {}
    for dataset in REGRESSION_CASES:
        for case in regression_cases(dataset):
            image, label = case.load()
            run, _ = simulate_mecca(model, image, label, rounds=5, clicks_per_round=CLICKS_PER_ROUND, seed=0)
            result[case.name] = run.dice
    return result


def make_click_script(image, label: np.ndarray) -> dict:
    """Three rounds of simulated clicks (model-independent, see the module docstring) in world RAS,
    and the ROI the engine's evaluation uses (object box + 8 voxels) as RAS voxel-centre corners."""
    from mecca.geometry import label_box
    from mecca.users import SimulatedUser
    from scipy import ndimage

    user = SimulatedUser(label, seed=0)
    imperfect = [np.zeros_like(label, bool), ndimage.binary_dilation(label, iterations=2),
                 ndimage.binary_erosion(label, iterations=2)]
    clicks = []
    for round_index, mask in enumerate(imperfect):
        for click in user.clicks(mask, CLICKS_PER_ROUND, round_index):
            point = RAS_FROM_LPS * image.index_to_world(click.position[::-1])
            clicks.append({"point": [round(float(v), 4) for v in point], "positive": click.positive,
                           "round": round_index + 1})
    lo, hi = label_box(label)
    corners = np.array([RAS_FROM_LPS * image.index_to_world(lo), RAS_FROM_LPS * image.index_to_world(np.subtract(hi, 1))])
    return {"case": CASE, "dataset": "Task04_Hippocampus", "coordinate_system": "RAS",
            "note": "made by Testing/make_reference.py clicks; replayed by Testing/test_slicer_replay.py",
            "roi": {"min": corners.min(0).round(4).tolist(), "max": corners.max(0).round(4).tolist()},
            "clicks": clicks}


def replay(logic, volumeNode, script: dict) -> np.ndarray:
    """Run a click script through the module's scripting API: an ROI node from the script's RAS box,
    then each round's clicks and one refine. Returns the segment (numpy k, j, i) and accepts it."""
    import slicer
    import slicer.util

    lo, hi = np.array(script["roi"]["min"]), np.array(script["roi"]["max"])
    roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "replay ROI")
    roiNode.SetCenter(*((lo + hi) / 2))
    roiNode.SetSize(*(hi - lo))
    session = logic.startSession(volumeNode, None, roiNode=roiNode)
    for round_number in sorted({click["round"] for click in script["clicks"]}):
        for click in script["clicks"]:
            if click["round"] == round_number:
                session.addClick(click["point"], click["positive"])
        session.refine()
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentationNode, session.segmentId, volumeNode)
    session.accept()
    return (mask > 0).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["clicks", "reference", "dice"])
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT / "MECCASegment"), str(TESTING)]
    from mecca.datasets import MSDDataset
    from mecca.io import write_json, write_volume

    case = next(c for c in MSDDataset.open(data_dir()).cases if c.name == CASE)
    image, label = case.load()
    if args.what == "clicks":
        write_json(make_click_script(image, label > 0), CLICK_SCRIPT)
        print(f"wrote {CLICK_SCRIPT}")
        return 0
    if args.what == "dice":
        from mecca.checkpoint import load_model
        from mecca.resources import DEFAULT_MODEL, resource_path

        dice = regression_dice(load_model(resource_path(*DEFAULT_MODEL), precision="float32"))
        write_json({"note": "made by Testing/make_reference.py dice (float32); checked by test_regression.py",
                    "dice_per_round": dice}, REGRESSION_DICE)
        print(f"wrote {REGRESSION_DICE}: {dice}")
        return 0

    import slicer.util
    from headless_slicer import HeadlessSlicer

    from MECCASegment import MECCASegmentLogic

    HeadlessSlicer().install_slicer_globals()
    volumeNode = slicer.util.loadVolume(str(case.image))
    mask = replay(MECCASegmentLogic(device="cpu"), volumeNode, json.loads(CLICK_SCRIPT.read_text()))
    write_volume(image.with_array(mask), REFERENCE_MASK)
    print(f"wrote {REFERENCE_MASK} ({int(mask.sum())} voxels) with {MECCASegmentLogic().modelFile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
