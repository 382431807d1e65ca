"""The baselines of the research harness: InterCNN's own model files and grid, and the classical
tools' seeds."""

import numpy as np
import pytest
from mecca.checkpoint import load_model
from mecca.clicks import Click
from mecca.errors import CheckpointError
from mecca.io import Volume
from mecca.networks import NetworkConfig

from research.baselines.intercnn import InterCNN, InterCNNMethod, load_intercnn, save_intercnn


def test_intercnn_uses_its_own_models_minimum(tmp_path):
    """InterCNN gets the grid its model was trained on, as MECCA's session does."""
    image = Volume(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
    for minimum, expected in ((None, (40, 40, 40)), (64**3, (64, 64, 64))):
        config = NetworkConfig(width=8, min_working_voxels=minimum)
        path = save_intercnn(InterCNN(config), config, tmp_path / f"click-{minimum}.safetensors")
        method = InterCNNMethod(path)
        method.start(image, ((0, 0, 0), (40, 40, 40)))
        assert method.grid.shape == expected
        assert method.refine([Click((20, 20, 20), True)]).shape == (40, 40, 40)


def test_intercnn_files_round_trip_and_are_no_mecca_models(tmp_path):
    config = NetworkConfig(width=8)
    net = InterCNN(config)
    path = save_intercnn(net, config, tmp_path / "c.safetensors", {"training": {"note": "test"}})
    loaded, loaded_config, metadata = load_intercnn(path)
    assert loaded_config.width == 8 and metadata["training"] == {"note": "test"}
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(net.state_dict().values(),
                                                                      loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="not a MECCA model"):
        load_model(path)


def test_the_shipped_baseline_models_load():
    from research.compare import MODELS

    load_intercnn(MODELS / "intercnn.safetensors")
    assert load_model(MODELS / "iter-mrl.safetensors").config.model == "mecca"
