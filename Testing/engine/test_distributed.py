"""Multi-process training: 2 gloo processes x 2 cases give the weights of 1 process x 4 cases, whether
that process runs its 4 cases at once or in passes whose gradients it adds up."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import copy_msd_cases

pytestmark = pytest.mark.slow  # real training processes

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from mecca.networks import NetworkConfig
    from mecca.cases import load_cases
    from mecca.recipe import TrainingConfig
    from mecca.training import Trainer

    dataset, out, batch_size, cases_per_pass = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    init = sys.argv[5] if len(sys.argv) > 5 else None  # given: train the confidence network alone from it
    torch.set_num_threads(1)
    # crops of exactly 24^3 (objects + margins >= 24 voxels): the same shapes in every batch split; float32,
    # since bfloat16 rounding depends on how many volumes a convolution sees at once
    config = TrainingConfig(epochs=1, batch_size=batch_size, cases_per_pass=cases_per_pass, max_crop=24,
                            margin_range=(8, 12), validation_fraction=0.0, bfloat16=False,
                            learning_rate=1e-3, clicks_per_round=(2, 2), rounds=3, confidence_only=init is not None)
    train, validation, record = load_cases([dataset], None, 0.0, progress=False)
    network = NetworkConfig(width=8, confidence_width=8, head_dilations=(2,), fusion_channels=4)
    Trainer(out, config, train, validation, record, network=network, init=init, progress=False).fit()
""")


@pytest.fixture(scope="module")
def eight_cases(hippocampus_dir, tmp_path_factory):
    return copy_msd_cases(hippocampus_dir, tmp_path_factory.mktemp("eight"), 8)


def _train(tmp_path, dataset, name, batch_size, processes, init=None, cases_per_pass=2):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"{name}.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "MECCASegment"), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    arguments = [str(script), str(dataset), str(out), str(batch_size), str(cases_per_pass)] + ([str(init)] if init else [])
    result = subprocess.run(launcher + arguments, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    from mecca.checkpoint import load_model

    return load_model(out), json.loads((tmp_path / f"{name}.run" / "log.jsonl").read_text().splitlines()[-1])


def test_two_gloo_processes_match_one_process_with_the_doubled_batch(eight_cases, tmp_path):
    single, _ = _train(tmp_path, eight_cases, "single", batch_size=4, processes=1, cases_per_pass=4)
    one_by_one, _ = _train(tmp_path, eight_cases, "passes", batch_size=4, processes=1, cases_per_pass=1)
    double, _ = _train(tmp_path, eight_cases, "ddp", batch_size=2, processes=2)
    for key, value in single.state_dict().items():
        assert torch.allclose(double.state_dict()[key], value, atol=2e-5, rtol=1e-4), key
        assert torch.allclose(one_by_one.state_dict()[key], value, atol=2e-5, rtol=1e-4), key
    from mecca.networks import MeccaModel, NetworkConfig

    initial = MeccaModel.create(NetworkConfig(width=8, confidence_width=8, head_dilations=(2,), fusion_channels=4), 0)
    moved = sum(float((initial.state_dict()[k] - v).abs().sum()) for k, v in single.state_dict().items())
    assert moved > 1e-3  # the two steps really trained
    assert double.metadata["training"]["processes"] == 2 and single.metadata["training"]["processes"] == 1


def test_two_gloo_processes_train_the_confidence_network_alone(eight_cases, tmp_path):
    """--confidence-only under torchrun: the frozen policy must not break DDP's reduction, nor move."""
    from mecca.checkpoint import save_model
    from mecca.networks import MeccaModel, NetworkConfig

    start = MeccaModel.create(NetworkConfig(width=8, confidence_width=8, head_dilations=(2,), fusion_channels=4), 0)
    init = save_model(start, tmp_path / "start.safetensors", {})
    trained, _ = _train(tmp_path, eight_cases, "confidence", batch_size=2, processes=2, init=init)
    for key, value in start.policy.state_dict().items():
        assert torch.equal(trained.policy.state_dict()[key], value), key
    assert any(not torch.equal(trained.confidence.state_dict()[k], v) for k, v in start.confidence.state_dict().items())
