"""A real `mecca train` process killed with SIGKILL resumes from its last state file and ends with
the same weights as a run that was never interrupted (same seed, same data, same options)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mecca.checkpoint import load_model

pytestmark = pytest.mark.slow  # real training processes

ROOT = Path(__file__).resolve().parents[2]
CASES = 5  # 4 training cases (2 batches per epoch) + 1 held out at --validation-fraction 0.2
EPOCHS = 3
STATE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def five_case_dataset(hippocampus_dir, tmp_path_factory):
    """The first five real hippocampus cases as their own MSD folder."""
    root = tmp_path_factory.mktemp("five_case_msd")
    manifest = json.loads((hippocampus_dir / "dataset.json").read_text())
    entries = manifest["training"][:CASES]
    for entry in entries:
        for key in ("image", "label"):
            target = root / entry[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(hippocampus_dir / entry[key], target)
    (root / "dataset.json").write_text(json.dumps({**manifest, "training": entries, "numTraining": CASES}))
    return root


def _train(dataset: Path, out: Path) -> subprocess.Popen:
    """Start `mecca train` with a small network; one thread so both runs do the same arithmetic."""
    recipe = out.with_suffix(".recipe.json")
    recipe.write_text(json.dumps({"network": {"width": 8}}))
    command = [sys.executable, "-m", "mecca.cli", "train", "--dataset", str(dataset), "--out", str(out),
               "--config", str(recipe), "--epochs", str(EPOCHS), "--seed", "3", "--save-every-s", "0", "--progress", "jsonl"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "MECCASegment"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(five_case_dataset, tmp_path):
    reference_out, killed_out = tmp_path / "reference.safetensors", tmp_path / "killed.safetensors"
    reference = _train(five_case_dataset, reference_out)  # runs alongside the one to be killed
    killed = _train(five_case_dataset, killed_out)
    state = tmp_path / "killed.run" / "last.safetensors"  # the trainer's documented <out>.run/ folder
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.exists(), "the training run wrote no state file"
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL and not killed_out.exists()

    progress = load_model(state).metadata["training_state"]["progress"]
    steps_done = progress["epoch"] * 2 + progress["step"]
    assert 0 < steps_done < EPOCHS * 2  # it really stopped part way

    resumed_output = _finish(_train(five_case_dataset, killed_out))
    assert f"resuming {state} at epoch {progress['epoch'] + 1}, step {progress['step']}" in resumed_output
    _finish(reference)

    expected, resumed = load_model(reference_out), load_model(killed_out)
    for name, value in expected.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    history = resumed.metadata["training"]["history"]
    assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))

