"""Model files: safetensors round trip, refusal of bad files with clear errors, no code execution."""

import json
import pickle

import pytest
import torch
from helpers import FileCreatingPickle
from mecca.checkpoint import FORMAT_VERSION, load_model, load_training_state, save_model, save_training_state
from mecca.errors import CheckpointError
from mecca.networks import MeccaModel, NetworkConfig
from safetensors.torch import save_file


def _small():
    return MeccaModel.create(NetworkConfig(width=8, confidence_width=8, head_dilations=(2,)), seed=1)


def test_round_trip_keeps_weights_architecture_and_metadata(tmp_path):
    model = _small()
    path = save_model(model, tmp_path / "m.safetensors", {"metrics": {"dice": [0.5, 0.9]}, "name": "t"})
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.metadata["metrics"] == {"dice": [0.5, 0.9]}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    state = torch.randn(1, 3, 10, 12, 14)
    with torch.no_grad():
        assert torch.allclose(model.policy(state)[0], loaded.policy(state)[0], atol=1e-6)


def test_files_from_before_the_working_grid_minimum_run_on_the_rois_own_voxels():
    """A model trained before NetworkConfig.min_working_voxels existed saw ROIs as they are; a new
    model enlarges small ROIs unless told otherwise."""
    old = {k: v for k, v in NetworkConfig().to_dict().items() if k != "min_working_voxels"}
    assert NetworkConfig.from_dict(old).min_working_voxels is None
    assert NetworkConfig().min_working_voxels == 64**3
    assert NetworkConfig.from_dict(NetworkConfig(min_working_voxels=1000).to_dict()).min_working_voxels == 1000
    with pytest.raises(ValueError, match="min_working_voxels"):
        NetworkConfig(min_working_voxels=0)


def test_files_from_before_the_hint_encoding_setting_use_gaussian_hints():
    old = {k: v for k, v in NetworkConfig().to_dict().items() if k != "hint_encoding"}
    assert NetworkConfig.from_dict(old).hint_encoding == "gaussian"
    assert NetworkConfig.from_dict(NetworkConfig(hint_encoding="geodesic").to_dict()).hint_encoding == "geodesic"
    with pytest.raises(ValueError, match="hint_encoding"):
        NetworkConfig(hint_encoding="disk")


def test_files_from_before_the_fusion_width_keep_their_fusion_layer(tmp_path):
    """Files without fusion_width have a fusion layer as wide as fusion_channels; new models 16."""
    old = {k: v for k, v in NetworkConfig().to_dict().items() if k != "fusion_width"}
    assert NetworkConfig.from_dict(old).fusion_out_channels == 8
    assert NetworkConfig().fusion_out_channels == 16
    model = MeccaModel.create(NetworkConfig.from_dict(old))
    save_model(model, tmp_path / "old.safetensors")
    assert load_model(tmp_path / "old.safetensors").policy.policy_out.fuse.out_channels == 8
    with pytest.raises(ValueError, match="fusion_width"):
        NetworkConfig(fusion_width=0)


def test_files_with_settings_of_a_retired_session_lever_load_and_fine_tune(tmp_path):
    """Models saved while the confidence veto existed record it among their session defaults: they
    keep their own defaults, the retired one dropped, and still seed a fine-tuning (mecca train --init)."""
    from mecca.recipe import resolve_recipe

    model = MeccaModel.create(NetworkConfig())
    model.metadata["inference"] = {"lean_correction": 0.25, "steps_per_round": "auto", "confidence_veto": 0.0}
    save_model(model, tmp_path / "veto.safetensors")
    loaded = load_model(tmp_path / "veto.safetensors")
    assert loaded.inference == {"lean_correction": 0.25, "steps_per_round": "auto"}
    assert resolve_recipe({}, loaded)[2] == loaded.inference


def test_training_state_restores_adam_moments(tmp_path):
    model = _small()
    optimizer = torch.optim.Adam(list(model.parameters()), lr=1e-3)
    loss = model.policy(torch.randn(1, 3, 8, 8, 8))[0].square().mean()
    loss.backward()
    optimizer.step()
    path = save_training_state(tmp_path / "s.safetensors", model, optimizer, {"epoch": 2, "step": 5}, {"x": 1})
    fresh = _small()
    fresh_optimizer = torch.optim.Adam(list(fresh.parameters()), lr=1e-3)
    meta = load_training_state(path, fresh, fresh_optimizer)
    assert meta["training_state"]["progress"] == {"epoch": 2, "step": 5}
    first = next(fresh.policy.parameters())
    assert torch.equal(fresh_optimizer.state[first]["exp_avg"], optimizer.state[next(model.policy.parameters())]["exp_avg"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing.safetensors")


def test_truncated_file(tmp_path):
    path = save_model(_small(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(path)


def _rewrite_metadata(path, change):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["mecca"])
    change(meta)
    save_file(load_file(str(path)), str(path), metadata={"mecca": json.dumps(meta)})


def test_wrong_format_version(tmp_path):
    path = save_model(_small(), tmp_path / "m.safetensors")
    _rewrite_metadata(path, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="format version"):
        load_model(path)


def test_other_architecture_than_the_weights(tmp_path):
    path = save_model(_small(), tmp_path / "m.safetensors")
    _rewrite_metadata(path, lambda m: m["network"].update(width=12))
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_model(path)


def test_weights_with_nan_are_refused(tmp_path):
    model = _small()
    with torch.no_grad():
        next(model.policy.parameters())[0] = float("nan")
    path = save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without MECCA metadata"):
        load_model(path)


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_a_pickle_is_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(FileCreatingPickle(str(marker))))
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_the_card_of_a_run_without_validation_has_no_empty_tables_and_names_an_average():
    """A run that held no case back (fine-tuning, a packed split) prints no empty validation table
    or curve; a weight average says whose weights it holds."""
    from mecca.report import model_card

    metadata = {"training": {"config": {"epochs": 2}, "history": [{"epoch": 1, "elapsed_s": 10, "validation": {}}]},
                "metrics": {"validation": {}}, "weight_average_of": ["a.safetensors", "b.safetensors"]}
    card = model_card("m.safetensors", metadata, {})
    assert "No validation at the end of training" in card and "## Validation at the end" not in card
    assert "## Training curve" not in card
    assert "the mean of the weights of `a.safetensors`, `b.safetensors`" in card
