"""Regression: the bundled model on held-out shared cases reaches the stored Dice per round."""

import json

import pytest
from make_reference import REGRESSION_DICE, regression_dice

TOLERANCE = 0.02  # Dice points per round: other CPUs may round a few near-tied actions differently


def test_bundled_model_reaches_the_stored_dice_per_round(bundled_model_float32, hippocampus_dir, left_atrium_dir):
    if not REGRESSION_DICE.exists():
        pytest.skip("no stored Dice yet: run `python Testing/make_reference.py dice` with the bundled model")
    stored = json.loads(REGRESSION_DICE.read_text())["dice_per_round"]
    measured = regression_dice(bundled_model_float32)
    assert measured.keys() == stored.keys()
    for case, dice in measured.items():
        assert dice == pytest.approx(stored[case], abs=TOLERANCE), case
