"""Replay regression, in the style of a Slicer self-test: a stored click script (world RAS points,
Testing/Data/hippocampus_014_clicks.json) replayed through the module's Logic on the real scan must
give the stored reference mask again (Dice >= 0.99). Both files are made by Testing/make_reference.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer.util
from headless_slicer import headless_slicer, scene  # noqa: F401  (pytest fixtures)
from make_reference import CLICK_SCRIPT, REFERENCE_MASK, replay


@pytest.fixture
def script() -> dict:
    return json.loads(CLICK_SCRIPT.read_text())


@pytest.fixture
def volume_node(scene, hippocampus_dir):
    return slicer.util.loadVolume(str(hippocampus_dir / "imagesTr" / "hippocampus_014.nii.gz"))


def test_click_script_lies_in_the_case_and_its_roi(script, volume_node):
    """The stored script needs no model to check: every click selects a voxel of the ROI, and there
    are three rounds with both + and - clicks."""
    from MECCASegmentLib.mrml import worldToIjk

    lo, hi = np.array(script["roi"]["min"]), np.array(script["roi"]["max"])
    box = np.array([worldToIjk(volume_node, lo), worldToIjk(volume_node, hi)])
    first, last = np.rint(box.min(0)).astype(int), np.rint(box.max(0)).astype(int)
    for click in script["clicks"]:
        ijk = np.rint(worldToIjk(volume_node, click["point"])).astype(int)
        assert np.all(first <= ijk) and np.all(ijk <= last)
    assert sorted({c["round"] for c in script["clicks"]}) == [1, 2, 3]
    assert {c["positive"] for c in script["clicks"]} == {True, False}


def test_replayed_click_script_gives_the_stored_reference(script, volume_node):
    from mecca.io import read_volume
    from mecca.metrics import dice
    from mecca.resources import DEFAULT_MODEL, resource_path

    from MECCASegment import MECCASegmentLogic

    try:
        resource_path(*DEFAULT_MODEL)
    except FileNotFoundError:
        pytest.skip("the bundled model Resources/Models/mecca.safetensors is not there yet (training runs)")
    if not REFERENCE_MASK.exists():
        pytest.skip(f"no stored reference mask yet: run `python Testing/make_reference.py reference` to make "
                    f"{REFERENCE_MASK.name} with the bundled model")
    mask = replay(MECCASegmentLogic(device="cpu"), volume_node, script)
    reference = read_volume(REFERENCE_MASK).array
    assert mask.shape == reference.shape
    assert dice(mask, reference) >= 0.99
