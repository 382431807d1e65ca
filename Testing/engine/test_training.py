"""Real (short) training on shared scans: the losses fall, and an interrupted run resumes exactly."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import copy_msd_cases, train_episode
from mecca import episodes, training
from mecca.cases import load_cases, structures_of
from mecca.datasets import MSDDataset
from mecca.episodes import make_batch
from mecca.networks import MeccaModel, NetworkConfig
from mecca.recipe import TrainingConfig
from mecca.training import Trainer, epoch_batches

SMALL = NetworkConfig(width=8, confidence_width=8, head_dilations=(2,), fusion_channels=4)


@pytest.fixture(scope="module")
def tiny_dataset(hippocampus_dir, tmp_path_factory):
    """Six real hippocampus cases in their own MSD folder."""
    return copy_msd_cases(hippocampus_dir, tmp_path_factory.mktemp("tiny_msd"), 6)


@pytest.mark.slow
def test_a_short_real_training_run_lowers_the_losses(tiny_dataset):
    config = TrainingConfig(learning_rate=1e-3, clicks_per_round=(3, 3))
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    model = MeccaModel.create(SMALL, seed=0).train()
    optimizer = torch.optim.Adam(list(model.parameters()), lr=config.learning_rate)
    history = []
    for step in range(40):
        rngs = [np.random.default_rng([0, step, e]) for e in range(2)]
        batch = make_batch([train[(2 * step) % 6], train[(2 * step + 1) % 6]], config, rngs)
        optimizer.zero_grad()
        stats = train_episode(model, batch, config, 3, [torch.Generator().manual_seed(step * 2 + e) for e in range(2)],
                              imitation=1.0)
        optimizer.step()
        history.append(stats)
    first, last = history[:10], history[-10:]
    for key in ("loss", "confidence_loss", "imitation_loss"):
        assert np.mean([h[key] for h in last]) < 0.8 * np.mean([h[key] for h in first]), key
    assert np.mean([h["reward"] for h in last]) > np.mean([h["reward"] for h in first])
    assert np.mean([h["confidence_accuracy"] for h in last]) > 0.8


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_dataset, tmp_path, monkeypatch):
    config = TrainingConfig(epochs=2, learning_rate=1e-3, validation_fraction=0.34, validation_cases_per_epoch=1,
                            clicks_per_round=(1, 2))

    def trainer(out):
        train, validation, record = load_cases([str(tiny_dataset)], None, config.validation_fraction, progress=False)
        return Trainer(out, config, train, validation, record, network=SMALL, progress=False)

    reference = trainer(tmp_path / "a.safetensors")
    reference.fit()
    expected = _weights(reference.model)
    _each_epoch_model_is_kept(reference, expected)

    interrupted = trainer(tmp_path / "b.safetensors")
    real_rollout = training.rollout
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed mid-step
        return real_rollout(*args, **kwargs)

    monkeypatch.setattr(training, "rollout", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(save_every_s=0.0)
    monkeypatch.setattr(training, "rollout", real_rollout)
    assert interrupted.state_path.exists()

    resumed = trainer(tmp_path / "b.safetensors")
    assert resumed.resume() and (resumed.epoch, resumed.step) == (1, 0)
    resumed.fit()
    for key, value in expected.items():
        assert torch.allclose(resumed.model.state_dict()[key], value, atol=1e-6), key
    assert len(resumed.history) == 2


def _each_epoch_model_is_kept(trainer, final_weights):
    """epoch-N.safetensors beside the run's state: the model after epoch N with the run's record up to
    then; the last one is the final model."""
    from mecca.checkpoint import load_model

    first, last = (load_model(trainer.epoch_model_path(epoch)) for epoch in (1, 2))
    assert len(first.metadata["training"]["history"]) == 1 and len(last.metadata["training"]["history"]) == 2
    assert "held-out cases per dataset" in first.metadata["metrics"]["protocol"]
    assert first.metadata["metrics"]["validation"] == first.metadata["training"]["history"][0]["validation"]
    for key, value in final_weights.items():
        assert torch.equal(last.state_dict()[key], value.cpu()), key
    assert any(not torch.equal(first.state_dict()[key], value) for key, value in final_weights.items())


def test_recorded_clicks_follow_the_crop_permutation_and_flips():
    from mecca.clicks import Click
    from mecca.episodes import _clicks_in_crop

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(20, 25, 30))
    recorded = {1: [Click((5, 7, 9), True), Click((12, 20, 3), False)], 2: [Click((0, 0, 0), True)]}
    lo, shape = np.array([2, 4, 1]), np.array([15, 18, 20])
    order, flips = [2, 0, 1], [0, 2]
    crop = np.flip(volume[2:17, 4:22, 1:21].transpose(order), axis=flips)
    moved = _clicks_in_crop(recorded, lo, shape, order, flips)
    assert sorted(moved) == [1]  # (0, 0, 0) lies outside the crop
    for original, local in zip(recorded[1], moved[1]):
        assert crop[local.position] == volume[original.position] and local.positive == original.positive


def test_unlabelled_cases_with_recorded_clicks_train(tiny_dataset, tmp_path):
    """Cases a user segmented interactively (image + clicks, no label) take part through eq. 6."""
    from mecca.datasets import MSDDataset
    from mecca.users import SimulatedUser

    dataset = MSDDataset.open(tiny_dataset)
    entries = []
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "clicksTr").mkdir()
    for case in dataset.cases[:2]:
        image, label = case.load()
        shutil.copy(case.image, tmp_path / "imagesTr" / case.image.name)
        user = SimulatedUser(label, seed=1)
        clicks = [{"point": (image.index_to_world(c.position[::-1]) * [-1, -1, 1]).tolist(),
                   "positive": c.positive, "round": 1} for c in user.clicks(np.zeros_like(label, bool), 4, 0)]
        (tmp_path / "clicksTr" / f"{case.name}.json").write_text(json.dumps({"coordinate_system": "RAS",
                                                                              "clicks": clicks}))
        entries.append({"image": f"./imagesTr/{case.image.name}", "clicks": f"./clicksTr/{case.name}.json"})
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "interactive", "training": entries}))
    train, _, record = load_cases([str(tiny_dataset)], None, 0.0, unlabeled_dirs=[str(tmp_path)], progress=False)
    unlabeled = [c for c in train if not c.labeled]
    assert len(unlabeled) == 2 and all(c.recorded_clicks and not c.label.any() for c in unlabeled)
    config = TrainingConfig()
    batch = make_batch(unlabeled, config, [np.random.default_rng(e) for e in range(2)])
    assert not batch.labeled and all(r and len(r[1]) > 0 for r in batch.recorded_clicks)
    model = MeccaModel.create(SMALL, seed=0).train()
    stats = train_episode(model, batch, config, 3, [torch.Generator().manual_seed(e) for e in range(2)], imitation=1.0)
    assert np.isfinite(stats["loss"]) and "confidence_accuracy" not in stats  # C learns from labelled cases only
    assert stats["imitation_loss"] == 0.0  # nor does the imitation: there is no label to imitate
    assert next(model.confidence.parameters()).grad is None or next(model.confidence.parameters()).grad.abs().sum() == 0


def test_bad_cases_stop_training_with_one_report_unless_skipped(tiny_dataset, tmp_path):
    import SimpleITK as sitk
    from mecca.errors import InputError

    root = tmp_path / "messy"
    shutil.copytree(tiny_dataset, root)
    manifest = json.loads((root / "dataset.json").read_text())
    label_path = root / manifest["training"][1]["label"]
    shifted = sitk.ReadImage(str(label_path))
    shifted.SetOrigin((50.0, 0.0, 0.0))  # a label on another grid
    sitk.WriteImage(shifted, str(label_path))
    (root / manifest["training"][3]["image"]).unlink()  # a missing image
    with pytest.raises(InputError) as error:
        load_cases([str(root)], None, 0.0, progress=False)
    message = str(error.value)
    assert "2 unusable case(s)" in message and "--skip-bad" in message
    with pytest.warns(UserWarning, match="skipped"):
        train, _, record = load_cases([str(root)], None, 0.0, progress=False, skip_bad=True)
    assert len(train) == 4 and len(record["datasets"][0]["skipped"]) == 2


def test_labelled_and_unlabelled_batches_alternate_as_in_algorithm_1(tiny_dataset):
    train, _, record = load_cases([str(tiny_dataset)], None, 0.0, labeled_fraction=0.34, rest_unlabeled=True,
                                  progress=False)
    assert [c.labeled for c in train].count(True) == 2 and len(train) == 6
    assert record["datasets"][0]["unlabeled_train"] == 4
    batches = epoch_batches(train, TrainingConfig(batch_size=2), epoch=0)
    kinds = [train[b[0]].labeled for b in batches]
    assert kinds == [True, False]  # one labelled batch, then one unlabelled batch
    dropped, _, _ = load_cases([str(tiny_dataset)], None, 0.0, labeled_fraction=0.34, progress=False)
    assert len(dropped) == 2 and all(c.labeled for c in dropped)


def test_confidence_only_training_keeps_the_policy_and_moves_c(tiny_dataset, tmp_path):
    """Recalibrating C of an existing model must not change a single segmentation."""
    from mecca.checkpoint import load_model, save_model
    from mecca.errors import InputError

    start = tmp_path / "start.safetensors"
    save_model(MeccaModel.create(SMALL, seed=0), start, {})
    config = TrainingConfig(epochs=1, learning_rate=1e-3, validation_fraction=0.0, clicks_per_round=(1, 2),
                            confidence_only=True)
    train, validation, record = load_cases([str(tiny_dataset)], None, config.validation_fraction, progress=False)
    Trainer(tmp_path / "c.safetensors", config, train, validation, record, init=start, progress=False).fit()
    before, after = load_model(start), load_model(tmp_path / "c.safetensors")
    for (name, old), new in zip(before.policy.state_dict().items(), after.policy.state_dict().values()):
        assert torch.equal(old, new), name
    assert any(not torch.equal(old, new) for old, new in zip(before.confidence.state_dict().values(),
                                                             after.confidence.state_dict().values()))
    with pytest.raises(InputError, match="--init"):
        Trainer(tmp_path / "d.safetensors", config, train, validation, record, network=SMALL, progress=False)


def test_frozen_parts_keep_the_init_models_weights_and_the_rest_trains(tiny_dataset, tmp_path):
    """A fine-tuning that keeps the policy's trunk and C: not one of their weights moves, the policy's
    heads do; a part that does not exist is named with the parts that do."""
    from mecca.checkpoint import load_model, save_model
    from mecca.errors import InputError

    start = tmp_path / "start.safetensors"
    save_model(MeccaModel.create(SMALL, seed=0), start, {})
    config = TrainingConfig(epochs=1, learning_rate=1e-3, validation_fraction=0.0, clicks_per_round=(1, 2),
                            frozen=("policy.trunk", "confidence"))
    train, validation, record = load_cases([str(tiny_dataset)], None, config.validation_fraction, progress=False)
    Trainer(tmp_path / "f.safetensors", config, train, validation, record, init=start, progress=False).fit()
    before, after = (dict(load_model(path).named_parameters()) for path in (start, tmp_path / "f.safetensors"))
    kept = [name for name in before if name.startswith(("policy.trunk.", "confidence."))]
    assert kept and all(torch.equal(before[name], after[name]) for name in kept)
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("policy.policy_"))
    with pytest.raises(InputError, match="'policy.stem' names no part of the networks; parts: .*policy.trunk"):
        Trainer(tmp_path / "g.safetensors", TrainingConfig(frozen=("policy.stem",)), train, validation, record,
                init=start, progress=False)
    with pytest.raises(InputError, match="policy, confidence leave nothing of the networks to train"):
        Trainer(tmp_path / "g.safetensors", TrainingConfig(frozen=("policy", "confidence")), train, validation, record,
                init=start, progress=False)
    with pytest.raises(ValueError, match="frozen must be a list of parts"):
        TrainingConfig.from_dict({"frozen": "confidence"})


def _train(tiny_dataset, tmp_path, out: str, recipe: dict, *options, epochs: int | None = 1) -> int:
    """`mecca train` (one epoch unless told otherwise; None: --epochs not given) on the tiny dataset
    with a recipe file; returns its exit code."""
    from mecca.cli import main

    path = tmp_path / f"{out}.recipe.json"
    path.write_text(json.dumps(recipe))
    length = ["--epochs", str(epochs)] if epochs is not None else []
    return main(["train", "--dataset", str(tiny_dataset), *length, "--validation-fraction", "0",
                 "--out", str(tmp_path / f"{out}.safetensors"), "--config", str(path), *options])


def test_the_working_grid_minimum_and_hints_are_recorded_and_inherited_when_fine_tuning(tiny_dataset, tmp_path):
    """`mecca train` stores the minimum the model trained with; --init keeps it unless the recipe
    changes it (null: never enlarge); the same for the hints and the training steps per round."""
    from mecca.checkpoint import load_model

    small = {"width": 8, "confidence_width": 8}
    assert _train(tiny_dataset, tmp_path, "new", {"steps_per_round": [1, 2], "network": small}) == 0
    assert load_model(tmp_path / "new.safetensors").config.min_working_voxels == 64**3
    assert load_model(tmp_path / "new.safetensors").config.hint_encoding == "gaussian"
    assert _train(tiny_dataset, tmp_path, "off", {"network": {"min_working_voxels": None, "hint_encoding": "geodesic"}},
                  "--init", str(tmp_path / "new.safetensors")) == 0
    assert load_model(tmp_path / "off.safetensors").config.min_working_voxels is None
    assert _train(tiny_dataset, tmp_path, "kept", {"steps_per_round": [1, 1]}, "--init", str(tmp_path / "off.safetensors")) == 0
    assert load_model(tmp_path / "kept.safetensors").config.min_working_voxels is None
    assert load_model(tmp_path / "kept.safetensors").config.hint_encoding == "geodesic"
    # the steps per round of training episodes are inherited too, unless given
    steps = [load_model(tmp_path / f"{name}.safetensors").metadata["training"]["config"]["steps_per_round"]
             for name in ("new", "off", "kept")]
    assert steps == [[1, 2], [1, 2], [1, 1]]


def test_fine_tuning_widens_the_fusion_layer_on_request_and_never_narrows_it(tiny_dataset, tmp_path, capsys):
    """New models get a 16-channel fusion layer, or the width asked for; --init keeps the model's own
    width unless the recipe widens it; narrowing (which would drop trained channels) is refused."""
    from mecca.checkpoint import load_model, save_model

    old = tmp_path / "old.safetensors"
    save_model(MeccaModel.create(replace(SMALL, fusion_width=None)), old)  # as files written before the setting
    assert _train(tiny_dataset, tmp_path, "kept", {}, "--init", str(old)) == 0
    assert load_model(tmp_path / "kept.safetensors").config.fusion_out_channels == SMALL.fusion_channels
    assert _train(tiny_dataset, tmp_path, "wide", {"network": {"fusion_width": 16}}, "--init", str(old)) == 0
    wide = load_model(tmp_path / "wide.safetensors")
    assert wide.config.fusion_width == 16 and wide.policy.policy_out.fuse.out_channels == 16
    assert _train(tiny_dataset, tmp_path, "narrow", {"network": {"fusion_width": 8}},
                  "--init", str(tmp_path / "wide.safetensors")) == 2
    assert "can only widen" in capsys.readouterr().err
    assert _train(tiny_dataset, tmp_path, "narrow", {"network": {"width": 0}}) == 2
    assert "width must be positive" in capsys.readouterr().err
    assert not (tmp_path / "narrow.safetensors").exists()
    assert _train(tiny_dataset, tmp_path, "eight", {"network": {"width": 8, "fusion_width": 8}}) == 0
    assert load_model(tmp_path / "eight.safetensors").config.fusion_out_channels == 8


def test_the_batch_size_reaches_the_run_and_is_checked(tiny_dataset, tmp_path, capsys):
    """The recipe's batch_size sets the cases per optimiser step and cases_per_pass how many go
    through the networks at once (both recorded in the model); 0 is refused at once."""
    from mecca.checkpoint import load_model

    small = {"width": 8, "confidence_width": 8}
    assert _train(tiny_dataset, tmp_path, "m", {"batch_size": 3, "cases_per_pass": 1, "network": small}) == 0
    recorded = load_model(tmp_path / "m.safetensors").metadata["training"]["config"]
    assert recorded["batch_size"] == 3 and recorded["cases_per_pass"] == 1
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    steps = epoch_batches(train, TrainingConfig(batch_size=3), 0)
    assert sorted(i for step in steps for i in step) == list(range(len(train))) and max(map(len, steps)) == 3
    for field in ("batch_size", "cases_per_pass"):
        assert _train(tiny_dataset, tmp_path, "zero", {field: 0}) == 2
        assert f"{field} must be at least 1" in capsys.readouterr().err


def test_the_evaluation_split_is_the_cases_training_held_out(tiny_dataset):
    """`mecca evaluate` (MSDDataset.validation_cases) scores exactly the cases `mecca train` kept out."""
    _, validation, _ = load_cases([str(tiny_dataset)], None, 0.34, progress=False)
    held_out = MSDDataset.open(tiny_dataset).validation_cases(0.34)
    assert [c.name for c in held_out] == sorted(c.name for c in validation) and len(held_out) == 2


def test_rounds_of_several_policy_steps_take_clicks_once_per_round(tiny_dataset, monkeypatch):
    """An episode of T rounds x 2 steps runs the policy 2T times and asks for clicks at the first step
    of each round only, with the round's index; a recipe's steps_per_round reaches the training config."""
    config = TrainingConfig(clicks_per_round=(3, 3))
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    model = MeccaModel.create(SMALL, seed=0).train()
    batch = make_batch(train[:2], config, [np.random.default_rng([0, e]) for e in range(2)])
    rounds_asked, policy_calls = [], []
    real_add_round_clicks = episodes._add_round_clicks
    monkeypatch.setattr(episodes, "_add_round_clicks",
                        lambda *args: rounds_asked.append(args[-1]) or real_add_round_clicks(*args))
    model.policy.register_forward_hook(lambda *_: policy_calls.append(1))
    stats = train_episode(model, batch, config, 3, [torch.Generator().manual_seed(e) for e in range(2)],
                          steps_per_round=2, chosen=[0, 7])
    # the rollout runs the policy 2T times, then once more for each of the two kept steps' gradients
    assert rounds_asked == list(range(config.rounds)) and len(policy_calls) == 2 * config.rounds + 2
    assert np.isfinite(stats["loss"]) and 0.0 <= stats["dice"] <= 1.0
    from mecca.recipe import resolve_recipe

    assert resolve_recipe({"steps_per_round": [1, 3]})[0].steps_per_round == (1, 3)


def test_intensity_augmentation_changes_only_the_image_and_repeats_with_the_seed(tiny_dataset):
    """A real crop under a random gamma, bias field, blur and noise: same label, valid mask and start,
    another image that still shows the same anatomy, normalised; the same draws give the same batch;
    outside the scan stays 0."""
    from mecca.episodes import augment_intensity

    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)

    def batch(fraction):
        config = TrainingConfig(intensity_augmentation=fraction, invert_fraction=0.0)
        return make_batch(train[:2], config, [np.random.default_rng([3, e]) for e in range(2)])

    plain, augmented, again = batch(0.0), batch(1.0), batch(1.0)
    for name in ("label", "valid", "start"):
        assert torch.equal(getattr(plain, name), getattr(augmented, name)), name
    assert torch.equal(augmented.image, again.image)
    for b in range(2):
        valid = plain.valid[b].numpy()
        before, after = plain.image[b].numpy()[valid], augmented.image[b].numpy()[valid]
        assert not np.allclose(before, after)
        assert np.corrcoef(before, after)[0, 1] > 0.6  # the same anatomy, not noise
        assert abs(after.mean()) < 0.15 and 0.85 < after.std() < 1.15  # normalised (then scaled by 0.9-1.1)
    image = plain.image[0].numpy().copy()
    valid = plain.valid[0].numpy().copy()
    valid[: image.shape[0] // 2] = False
    out = augment_intensity(np.where(valid, image, 0.0).astype(np.float32), valid, np.random.default_rng(0))
    assert not out[~valid].any() and abs(out[valid].mean()) < 1e-4 and abs(out[valid].std() - 1.0) < 1e-3


@pytest.mark.parametrize("field", ["intensity_augmentation", "mask_start_fraction", "synthetic_fraction"])
def test_the_episode_fractions_are_checked_before_any_case_loads(field):
    from mecca.errors import InputError
    from mecca.recipe import resolve_recipe

    assert getattr(resolve_recipe({field: 0.5})[0], field) == 0.5
    for value in (1.5, -0.1, "x"):
        with pytest.raises((InputError, TypeError)):
            resolve_recipe({field: value})


def test_episodes_start_from_an_imperfect_segment_in_the_mask_start_fraction(tiny_dataset):
    """1: every labelled episode starts from the label grown, shrunk or shifted (p = 0.9 / 0.1, close
    to the label); 0: every one starts from nothing (p = 0.5)."""
    from mecca.environment import MASK_TENTHS, START_TENTHS

    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)

    def batch(fraction):
        config = TrainingConfig(mask_start_fraction=fraction)
        return make_batch(train[:3], config, [np.random.default_rng([5, e]) for e in range(3)])

    assert (batch(0.0).start == START_TENTHS).all()
    from_segment = batch(1.0)
    for b in range(3):
        start, label = from_segment.start[b].numpy(), from_segment.label[b].numpy() > 0
        assert set(np.unique(start)) == set(MASK_TENTHS)
        inside = start == MASK_TENTHS[1]
        assert 2 * np.count_nonzero(inside & label) / (np.count_nonzero(inside) + np.count_nonzero(label)) > 0.3


def test_synthetic_objects_and_thick_slices_reach_the_episodes(tiny_dataset):
    """synthetic_fraction 1: every labelled crop's object is drawn from its scan, not its label (the
    crop's own image unchanged); thick_slice_fraction 1: only the image changes."""
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)

    def batch(**options):
        config = TrainingConfig(invert_fraction=0.0, mask_start_fraction=0.0, **options)
        return make_batch(train[:3], config, [np.random.default_rng([9, e]) for e in range(3)])

    plain, objects = batch(), batch(synthetic_fraction=1.0)
    labels = [train[i].label.sum() for i in range(3)]
    assert any(objects.label[b].sum() != plain.label[b].sum() for b in range(3)), labels
    assert all(objects.label[b].any() for b in range(3))
    thick = batch(thick_slice_fraction=1.0)
    assert torch.equal(thick.label, plain.label) and torch.equal(thick.valid, plain.valid)
    assert not torch.allclose(thick.image, plain.image)


def test_the_boundary_reward_weights_each_voxels_returns_by_its_nearness_to_the_labels_surface(tiny_dataset):
    """BS-IRIS's reward (research/baselines/bs_iris.py): the same actions, each voxel's returns
    (1 + lambda w) times, w = 1 on the label's surface and falling away from it."""
    from mecca.environment import boundary_weights

    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    model = MeccaModel.create(SMALL, seed=0)
    runs = []
    for boundary in (0.0, 1.0):
        config = TrainingConfig(boundary_reward=boundary, confidence_reward=False, bfloat16=False)
        batch = make_batch(train[:2], config, [np.random.default_rng(e) for e in range(2)])
        runs.append(episodes.rollout(model, batch, config, 2, [torch.Generator().manual_seed(e) for e in range(2)]))
    weights = torch.from_numpy(np.stack([boundary_weights(case) for case in runs[1].batch.label.numpy()]))
    assert 0 < weights.mean() < 0.5 and weights.max() == 1.0
    for plain, weighted in zip(runs[0].steps, runs[1].steps, strict=True):
        assert torch.equal(plain.action, weighted.action)
        assert torch.allclose(weighted.returns, plain.returns * (1 + weights), atol=1e-5)
        assert not torch.allclose(weighted.returns, plain.returns)


def test_a_training_recipe_file_sets_the_run_and_is_checked(tiny_dataset, tmp_path, capsys):
    from mecca.checkpoint import load_model
    from mecca.cli import main

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"warm_start_epochs": 1, "backward_steps": 1, "user_styles": ["interior"],
                                  "validation_cases_per_epoch": 1, "network": {"width": 8, "confidence_width": 8}}))
    common = ["train", "--dataset", str(tiny_dataset), "--epochs", "1", "--validation-fraction", "0.34"]
    assert main(common + ["--out", str(tmp_path / "m.safetensors"), "--config", str(recipe)]) == 0
    model = load_model(tmp_path / "m.safetensors")
    config = model.metadata["training"]["config"]
    assert config["warm_start_epochs"] == 1 and config["user_styles"] == ["interior"] and model.config.width == 8
    assert model.metadata["training"]["history"][0]["policy_gradient"] is False
    for content, message in (({"no_such_setting": 1}, "no_such_setting"), ({"user_styles": ["centre"]}, "user_styles"),
                             ([1, 2], "a recipe is a JSON object")):
        recipe.write_text(json.dumps(content))
        assert main(common + ["--out", str(tmp_path / "n.safetensors"), "--config", str(recipe)]) == 2
        assert message in capsys.readouterr().err


def test_each_volumes_action_noise_is_its_own_generators_gumbel_draw():
    """Sampling is argmax(logits + Gumbel noise): a volume's noise comes from its generator alone
    (so a batch's partners do not change an episode), drawn on the generator's device."""
    from mecca.episodes import _gumbel

    shape = (2, 6, 5, 4, 3)
    noise = _gumbel(shape, [torch.Generator().manual_seed(seed) for seed in (1, 2)], torch.device("cpu"))
    alone = _gumbel((1, *shape[1:]), [torch.Generator().manual_seed(2)], torch.device("cpu"))
    assert torch.equal(noise[1], alone[0])
    uniform = torch.rand(shape[1:], generator=torch.Generator().manual_seed(1)).clamp(1e-10, 1 - 1e-7)
    assert torch.allclose(noise[0], -torch.log(-torch.log(uniform)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the device loop is checked where one is")
def test_a_gpu_run_trains_and_resumes_there(tiny_dataset, tmp_path):
    """Its action noise is drawn on the GPU, and a resumed run's Adam moments go back to the GPU
    (they came back on the CPU, and the first step after a resume failed)."""
    train, _, record = load_cases([str(tiny_dataset)], None, 0.0, progress=False)

    def trainer():
        return Trainer(tmp_path / "m.safetensors", TrainingConfig(epochs=1), train, [], record,
                       network=SMALL, device="cuda", progress=False)

    first = trainer()
    stats, labeled = first.train_step([0, 1])
    assert labeled and np.isfinite(stats["loss"]) and next(first.model.parameters()).is_cuda
    first.run_dir.mkdir(parents=True)
    first._save_state()
    resumed = trainer()
    assert resumed.resume()
    assert np.isfinite(resumed.train_step([2, 3])[0]["loss"])


def test_a_fine_tuning_keeps_the_gentle_schedule_on_a_structure_the_model_segments_and_a_longer_stronger_one_elsewhere(
        tiny_dataset, bundled_model_float32):
    from mecca.defaults import KNOWN_STRUCTURE, NEW_STRUCTURE

    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    said = []
    assert training.fine_tuning_schedule(bundled_model_float32, train, said.append) == KNOWN_STRUCTURE
    assert "a structure it knows" in said[-1]
    assert training.fine_tuning_schedule(MeccaModel.create(SMALL, seed=0), train, said.append) == NEW_STRUCTURE
    assert "does not know" in said[-1] and f"{NEW_STRUCTURE['epochs']} epochs at {NEW_STRUCTURE['learning_rate']:g}" \
        in said[-1]


def test_a_fine_tuning_takes_from_the_schedule_only_what_it_is_not_given(tiny_dataset, tmp_path, monkeypatch):
    """`mecca train --init` on real cases with a model that does not know them: without --epochs and
    --lr both come from NEW_STRUCTURE (its length shortened here to 1 epoch to keep the test short),
    a recipe's rate stays. The fine-tuned model keeps its inherited lean correction unless it collapses
    on its cases against the best candidate (scores recorded), and a recipe's own value stays."""
    from mecca.checkpoint import load_model, save_model
    from mecca.defaults import NEW_STRUCTURE

    monkeypatch.setitem(NEW_STRUCTURE, "epochs", 1)
    start = tmp_path / "start.safetensors"
    save_model(MeccaModel.create(SMALL, seed=0), start, {})
    assert _train(tiny_dataset, tmp_path, "auto", {}, "--init", str(start), epochs=None) == 0
    auto = load_model(tmp_path / "auto.safetensors")
    config = auto.metadata["training"]["config"]
    assert config["epochs"] == 1 and config["learning_rate"] == NEW_STRUCTURE["learning_rate"]
    choice = auto.metadata["lean_correction_choice"]
    scores, inherited, chosen = choice["round5_dice"], choice["inherited"], auto.inference["lean_correction"]
    assert set(scores) == {str(lean) for lean in training.LEAN_CORRECTIONS}
    if chosen == inherited:
        assert scores[str(inherited)] >= training.COLLAPSE_SHARE * max(scores.values())
    else:
        assert scores[str(inherited)] < training.COLLAPSE_SHARE * max(scores.values()) == \
            training.COLLAPSE_SHARE * scores[str(chosen)]
    assert _train(tiny_dataset, tmp_path, "rate", {"learning_rate": 1e-3, "inference": {"lean_correction": 1.0}},
                  "--init", str(start), epochs=None) == 0
    rate = load_model(tmp_path / "rate.safetensors")
    config = rate.metadata["training"]["config"]
    assert config["epochs"] == 1 and config["learning_rate"] == 1e-3
    assert rate.inference["lean_correction"] == 1.0 and "lean_correction_choice" not in rate.metadata


def test_each_label_value_is_a_structure_and_a_connected_union_one_more():
    halves = np.zeros((12, 12, 12), np.uint8)
    halves[2:6, 3:9, 3:9], halves[6:10, 3:9, 3:9] = 1, 2
    names = {0: "background", 1: "Anterior", 2: "Posterior"}
    found = dict(structures_of(halves, None, names))
    assert list(found) == ["Anterior", "Posterior", "Anterior+Posterior"]
    assert found["Anterior+Posterior"].sum() == (halves > 0).sum() and found["Anterior"].sum() == (halves == 1).sum()
    apart = halves.copy()
    apart[6:10] = 0
    apart[8:11, 0:2, 0:2] = 2  # too small (12 voxels) to be a structure, and far from the other
    assert list(dict(structures_of(apart, None, names))) == ["Anterior"]
    organs = np.zeros((12, 12, 12), np.uint8)
    organs[1:5, 1:5, 1:5], organs[6:10, 6:10, 6:10] = 1, 3  # two of three organs, apart: no union
    assert list(dict(structures_of(organs, None, {1: "a", 2: "b", 3: "c"}))) == ["a", "c"]
    assert list(dict(structures_of(halves, (2,), names))) == ["Posterior"]


def test_head_and_neck_organs_train_as_structures_of_their_own_on_cropped_grids(head_neck_ct_dir, tmp_path):
    """Each organ of a case is one training case named dataset:organ, its grid cropped around the
    organ (smaller than the whole scan on that grid) and holding all of it (its volume within
    nearest-neighbour resampling's loss on a thin cord); CT stays in whole HU."""
    folder = copy_msd_cases(head_neck_ct_dir, tmp_path / "ct", 3)
    train, validation, _ = load_cases([str(folder)], None, 0.0, progress=False, min_working_voxels=64**3,
                                      structures="each")
    assert not validation and len(train) >= 9
    for case in train:
        dataset, organ = case.dataset.split(":")
        image, label_map = MSDDataset.open(folder).cases[[c.name for c in MSDDataset.open(folder).cases].index(
            case.name)].load_label_map()
        value = {v: k for k, v in json.loads((folder / "dataset.json").read_text())["labels"].items()}[organ]
        assert dataset == "OpenKBP_HeadNeckCT" and case.label.any() and case.image.array.dtype == np.int16
        assert np.prod(case.image.shape) < np.prod(image.shape) * 8  # cropped: the whole scan enlarged would not be
        native_volume = np.count_nonzero(label_map == int(value)) * np.prod(image.spacing)
        assert abs(np.count_nonzero(case.label) * np.prod(case.image.spacing) / native_volume - 1) < 0.35  # thin cords


def test_balanced_groups_give_every_structure_as_many_episodes_as_the_largest(tiny_dataset):
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False, structures="each")
    assert sorted({c.dataset for c in train}) == ["Hippocampus:Anterior", "Hippocampus:Anterior+Posterior",
                                                  "Hippocampus:Posterior"]
    fewer = [c for c in train if c.dataset != "Hippocampus:Posterior"] + \
        [c for c in train if c.dataset == "Hippocampus:Posterior"][:2]
    config = TrainingConfig(balanced_groups=True, batch_size=2)
    batches = epoch_batches(fewer, config, epoch=0)
    counts = {}
    for batch in batches:
        assert len({fewer[i].dataset for i in batch}) == 1
        for index in batch:
            counts[fewer[index].dataset] = counts.get(fewer[index].dataset, 0) + 1
    assert set(counts.values()) == {6}
    assert sum(len(b) for b in epoch_batches(fewer, replace(config, balanced_groups=False), 0)) == 14


def test_a_split_model_trains_its_encoder_once_per_episode(tiny_dataset, tmp_path):
    """One optimiser step of the split architecture: the image encoder runs once in the rollout and
    once with gradients for all kept steps, and every part of the model gets a gradient."""
    split = NetworkConfig(architecture="split", width=8, confidence_width=8, encoder_width=8, head_dilations=(2,),
                          confidence_dilations=(2,), encoder_dilations=(1,), fusion_channels=4)
    config = TrainingConfig(epochs=1, batch_size=1, cases_per_pass=1, backward_steps=3, clicks_per_round=(1, 2),
                            bfloat16=False)
    train, _, _ = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    trainer = Trainer(tmp_path / "split.safetensors", config, train, [], {}, network=split, progress=False)
    with torch.no_grad():  # as after some training: the zero-initialised output layers pass gradients on
        for layer in (trainer.model.policy.policy_out.out, trainer.model.policy.value_out):
            layer.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = trainer.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        trainer.train_step(trainer.batches(0)[0])
    finally:
        hook.remove()
    assert len(calls) == 2
    for name, parameter in trainer.model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_ctrl_c_saves_the_runs_state_and_says_how_to_resume(tiny_dataset, tmp_path, monkeypatch):
    config = TrainingConfig(epochs=1, learning_rate=1e-3, clicks_per_round=(1, 2), validation_fraction=0.0)
    train, _, record = load_cases([str(tiny_dataset)], None, 0.0, progress=False)
    trainer = Trainer(tmp_path / "m.safetensors", config, train, [], record, network=SMALL, progress=False)
    plain_step, calls = Trainer.train_step, []

    def interrupted_second_step(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return plain_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_second_step)
    said = []
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(save_every_s=1e9, say=said.append)  # no timed save before the interrupt
    assert trainer.state_path.exists() and "the same command resumes it" in said[0]
    resumed = Trainer(tmp_path / "m.safetensors", config, train, [], record, network=SMALL, progress=False)
    assert resumed.resume() and (resumed.epoch, resumed.step) == (0, 1)
