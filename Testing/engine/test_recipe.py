"""A run's settings from the schedule, a recipe and the command line; what a model file carries
about its training (lineage) and its own session defaults."""

import pytest
from mecca.defaults import FINE_TUNING, INFERENCE_DEFAULTS
from mecca.errors import InputError
from mecca.networks import MeccaModel, NetworkConfig
from mecca.recipe import TrainingConfig, resolve_recipe
from mecca.training import lineage_of


def _trained(**metadata) -> MeccaModel:
    model = MeccaModel.create(NetworkConfig(width=8, confidence_width=8, min_working_voxels=None, hint_encoding="geodesic"))
    model.metadata = metadata
    return model


def test_command_line_over_recipe_over_schedule():
    config, network, inference = resolve_recipe({"learning_rate": 1e-3, "epochs": 4}, epochs=9, learning_rate=None)
    assert config.learning_rate == 1e-3 and config.epochs == 9  # None: not given on the command line
    assert config.class_balance_epochs == TrainingConfig.class_balance_epochs and network == NetworkConfig()
    assert inference == INFERENCE_DEFAULTS


def test_a_fine_tuning_inherits_the_models_network_steps_and_session_defaults():
    init = _trained(training={"config": {"steps_per_round": [1, 3]}}, inference={"lean_correction": 0.0})
    config, network, inference = resolve_recipe({}, init)
    assert config.learning_rate == FINE_TUNING["learning_rate"] and config.class_balance_epochs == 0
    assert config.steps_per_round == (1, 3)
    assert network.min_working_voxels is None and network.hint_encoding == "geodesic" and network.width == 8
    assert inference == {"lean_correction": 0.0, "steps_per_round": "auto"}
    _, _, changed = resolve_recipe({"inference": {"lean_correction": 0.25}}, init)
    assert changed["lean_correction"] == 0.25
    with pytest.raises(InputError, match="inference"):
        resolve_recipe({"inference": {"lean": 1}}, init)


def test_the_imitation_target_is_a_recipe_choice_checked_on_the_way_in():
    assert resolve_recipe({})[0].imitation_target == "fitting"
    assert resolve_recipe({}, _trained(training={"config": {}}))[0].imitation_target == "fitting"  # measured best
    assert resolve_recipe({"imitation_target": "largest"})[0].imitation_target == "largest"
    with pytest.raises(InputError, match="imitation_target"):
        resolve_recipe({"imitation_target": "nearest"})


def test_a_models_session_defaults_reach_its_sessions(blob_volume):
    from mecca.session import InteractiveSession

    volume, _ = blob_volume
    plain = InteractiveSession(volume, _trained())
    assert plain.lean_correction == INFERENCE_DEFAULTS["lean_correction"] and plain.steps_per_round == "auto"
    own = InteractiveSession(volume, _trained(inference={"lean_correction": 0.0, "steps_per_round": 2}))
    assert own.lean_correction == 0.0 and own.steps_per_round == 2
    assert InteractiveSession(volume, _trained(inference={"lean_correction": 0.0}), lean_correction=0.7).lean_correction == 0.7


def test_the_lineage_lists_every_stage_oldest_first():
    first = {"training": {"command": "mecca train A", "wall_time_s": 3600.0, "config": {"epochs": 8}},
             "metrics": {"validation": {"Hippocampus": {"dice_mean_per_round": [0.5]}}}}
    second = {"lineage": lineage_of(first), "training": {"command": "mecca train B --init a", "wall_time_s": 1800.0,
                                                         "config": {"epochs": 2}, "data": {"init": "a"}}}
    stages = lineage_of(second)
    assert [s["command"] for s in stages] == ["mecca train A", "mecca train B --init a"]
    assert stages[0]["validation"] == {"Hippocampus": {"dice_mean_per_round": [0.5]}} and stages[1]["init"] == "a"
    assert lineage_of({}) == []
