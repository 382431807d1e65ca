"""The baselines of the research harness: InterCNN's and the automatic networks' own model files, grid
and training, BS-IRIS's model check, UA-MT's loss, and the classical tools' seeds."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import copy_msd_cases
from mecca.cases import load_cases
from mecca.checkpoint import load_model
from mecca.clicks import Click
from mecca.datasets import MSDDataset
from mecca.episodes import make_batch
from mecca.errors import CheckpointError, InputError
from mecca.geometry import label_box
from mecca.networks import NetworkConfig
from mecca.recipe import TrainingConfig
from mecca.volume import Volume

from research.baselines.automatic import ARCHITECTURES, AutomaticMethod, automatic_step_loss, build, load_automatic, save_automatic, train
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


def test_bs_iris_sessions_take_only_a_model_trained_as_bs_iris(tmp_path):
    """The row says BS-IRIS only for a model with supervoxel hints and the boundary reward, whose
    recipe (research/recipes/bs-iris.json) is a valid run."""
    from mecca.checkpoint import save_model
    from mecca.networks import MeccaModel
    from mecca.recipe import read_recipe, resolve_recipe
    from mecca.report import model_card
    from mecca.resources import DEFAULT_MODEL, resource_path

    from research.baselines.bs_iris import bs_iris_method
    from research.compare import MODELS

    config, network, _ = resolve_recipe(read_recipe(MODELS.parent / "recipes" / "bs-iris.json"))
    assert config.boundary_reward > 0 and not config.confidence_reward and network.hint_encoding == "supervoxel"
    path = save_model(MeccaModel.create(replace(network, width=8), seed=0), tmp_path / "bs-iris.safetensors",
                      {"training": {"config": {"boundary_reward": config.boundary_reward, "confidence_reward": False}}})
    method = bs_iris_method(path)
    assert method.name == "bs-iris" and method.model.config.hint_encoding == "supervoxel"
    assert "- Kind: BS-IRIS baseline" in model_card(path, method.model.metadata, network.to_dict())
    with pytest.raises(CheckpointError, match="not a BS-IRIS model: it was trained with gaussian hints"):
        bs_iris_method(resource_path(*DEFAULT_MODEL))


def test_the_shipped_baseline_models_load():
    from research.baselines.bs_iris import bs_iris_method
    from research.compare import MODELS

    load_intercnn(MODELS / "intercnn.safetensors")
    assert load_model(MODELS / "iter-mrl.safetensors").config.model == "mecca"
    assert bs_iris_method(MODELS / "bs-iris.safetensors").model.config.hint_encoding == "supervoxel"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_automatic_files_round_trip_keep_their_architecture_and_are_no_mecca_models(tmp_path, architecture):
    config = NetworkConfig(width=8)
    torch.manual_seed(0)
    net = build(architecture, config)
    path = save_automatic(net, architecture, config, tmp_path / "a.safetensors")
    loaded, loaded_architecture, _, _ = load_automatic(path)
    assert loaded_architecture == architecture
    image = torch.randn(1, 1, 20, 22, 18)
    with torch.no_grad():
        assert torch.equal(net.eval()(image), loaded(image)) and loaded(image).shape == (1, 20, 22, 18)
    other = next(a for a in ARCHITECTURES if a != architecture)
    with pytest.raises(CheckpointError, match=f"an automatic {architecture}, not a {other}"):
        AutomaticMethod(path, other)
    with pytest.raises(CheckpointError, match="'automatic' model where a 'intercnn' one was expected"):
        load_intercnn(path)
    with pytest.raises(CheckpointError, match="not a MECCA model"):
        load_model(path)


def test_automatic_training_learns_a_real_structure_and_writes_each_epoch(hippocampus_dir, tmp_path):
    """Three epochs of the P-Net on four real hippocampus cases lower its loss on a fixed batch of their
    crops (at a fixed class weighting); every epoch's file is written with its history, and the
    model's sessions give one mask whatever the clicks."""
    root = copy_msd_cases(hippocampus_dir, tmp_path / "msd", 5)
    network = NetworkConfig(width=8)
    recipe = TrainingConfig(epochs=3, learning_rate=2e-3, batch_size=2, validation_fraction=0.2)
    out = train("p-net", [str(root)], tmp_path / "p-net.safetensors", recipe, network)
    trained, _, _, metadata = load_automatic(out)
    torch.manual_seed(0)  # train's seed: the same starting weights
    untrained = build("p-net", network).eval()
    cases = load_cases([str(root)], None, 0.2, progress=False, min_working_voxels=network.min_working_voxels)[0]
    batch = make_batch(cases[:2], recipe, [np.random.default_rng([9, n]) for n in range(2)])
    with torch.no_grad():
        losses = [automatic_step_loss(net, batch, None, 1.0)[1]["loss"] for net in (untrained, trained)]
    assert losses[1] < 0.9 * losses[0]
    history = metadata["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and len(history[2]["validation_dice_mean_per_round"]) == 1
    assert (tmp_path / "p-net.epoch-1.safetensors").is_file()
    method = AutomaticMethod(out, "p-net")
    image, label = MSDDataset.open(root).cases[0].load()
    method.start(image, label_box(label > 0))
    first = method.refine([Click((5, 5, 5), True)])
    assert np.array_equal(first, method.refine([Click((6, 6, 6), False)])) and first.shape == label[method.region].shape


def test_ua_mt_trains_on_the_unlabelled_rest_through_a_teacher_that_follows_the_student(hippocampus_dir, tmp_path):
    """UA-MT on real hippocampus cases, half of them labelled: a labelled batch is the U-Net row's
    supervised step (the teacher does not see it, as in the authors' code), an unlabelled batch adds
    the consistency term alone, the teacher is the moving average of the student, the ramp rises to
    1; a run without unlabelled cases is refused (that is the U-Net row)."""
    from research.baselines.automatic import supervised_loss
    from research.baselines.ua_mt import MeanTeacherLoss, ramp
    from research.baselines.ua_mt import train as train_ua_mt

    root = copy_msd_cases(hippocampus_dir, tmp_path / "msd", 5)
    network = NetworkConfig(width=4)
    recipe = TrainingConfig(epochs=1, batch_size=1, validation_fraction=0.2, labeled_fraction=0.5, rest_unlabeled=True)
    cases = load_cases([str(root)], None, 0.2, labeled_fraction=0.5, rest_unlabeled=True, progress=False,
                       min_working_voxels=network.min_working_voxels)[0]
    labelled, unlabelled = ([c for c in cases if c.labeled == flag] for flag in (True, False))
    assert labelled and unlabelled
    torch.manual_seed(0)
    student, loss = build("u-net", network), MeanTeacherLoss()
    rng = np.random.default_rng(0)
    for case, progress in ((labelled[0], 0.0), (unlabelled[0], 1.0)):
        batch = make_batch([case], recipe, [np.random.default_rng(1)])
        value, stats = loss(student, batch, rng, 1.0, progress)
        if case.labeled:
            assert "consistency" not in stats
            assert value.item() == pytest.approx(supervised_loss(student(batch.image[:, None]), batch, 1.0)[0].item(),
                                                 rel=1e-5)
        else:
            assert "dice" not in stats and 0 <= stats["certain_share"] <= 1
        value.backward()
    assert value.item() == pytest.approx(0.1 * stats["consistency"], rel=1e-5)  # unlabelled, at the end of the ramp
    with torch.no_grad():
        for weight in student.parameters():
            weight.add_(1.0)
    teacher_before = [w.clone() for w in loss.teacher.parameters()]
    loss(student, make_batch([unlabelled[0]], recipe, [np.random.default_rng(1)]), rng, 1.0, 0.5)
    for before, after, weight in zip(teacher_before, loss.teacher.parameters(), student.parameters()):
        decay = min(1 - 1 / 3, 0.99)  # the third step
        assert torch.allclose(after, decay * before + (1 - decay) * weight, atol=1e-6)
    assert ramp(0.0) == pytest.approx(math.exp(-5)) and ramp(1.0) == 1.0
    with pytest.raises(InputError, match="UA-MT learns from unlabelled cases"):
        train_ua_mt([str(root)], tmp_path / "x.safetensors", TrainingConfig(epochs=1), network)
    # a whole run writes an automatic u-net file, validated (one round) only when the recipe asks for it
    for validation_cases in (0, 1):
        out = train_ua_mt([str(root)], tmp_path / f"ua-mt-{validation_cases}.safetensors",
                          replace(recipe, validation_cases_per_epoch=validation_cases), network)
        _, architecture, _, metadata = load_automatic(out)
        assert architecture == "u-net" and metadata["semi_supervised"] == "ua-mt"
        validation_dice = metadata["training"]["history"][0]["validation_dice_mean_per_round"]
        assert validation_dice == [] if validation_cases == 0 else len(validation_dice) == 1
