"""Shared fixtures: the engine on sys.path, the real scans (skip when absent), small models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "MECCASegment"), str(ROOT / "Testing"), str(ROOT)]  # engine + Slicer module, helpers, research
torch.set_num_threads(min(2, os.cpu_count() or 1))

DATA = Path(os.environ.get("MECCA_DATA", ROOT.parent / "shared" / "data"))
HIPPOCAMPUS = DATA / "Task04_Hippocampus"
LEFT_ATRIUM = DATA / "LeftAtrium2018"
HEAD_NECK_CT = DATA / "OpenKBP_HeadNeckCT"


def _require(path: Path) -> Path:
    if not (path / "dataset.json").exists():
        pytest.skip(f"real scans not found at {path} (set MECCA_DATA to the folder holding the MSD datasets)")
    return path


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return _require(HIPPOCAMPUS)


@pytest.fixture(scope="session")
def left_atrium_dir() -> Path:
    return _require(LEFT_ATRIUM)


@pytest.fixture(scope="session")
def head_neck_ct_dir() -> Path:
    return _require(HEAD_NECK_CT)


@pytest.fixture(scope="session")
def hippocampus_case(hippocampus_dir):
    """A real hippocampus MRI (validation split of the bundled model) and its binary label."""
    from mecca.datasets import MSDDataset

    dataset = MSDDataset.open(hippocampus_dir)
    case = next(c for c in dataset.cases if c.name == "hippocampus_014")
    return case.load()


@pytest.fixture(scope="session")
def bundled_model_float32():
    """The bundled model in float32 (the same numbers on every CPU); skips while it is absent."""
    from mecca.checkpoint import load_model
    from mecca.resources import DEFAULT_MODEL, resource_path

    try:
        path = resource_path(*DEFAULT_MODEL)
    except FileNotFoundError:
        pytest.skip("the bundled model Resources/Models/mecca.safetensors is not there")
    return load_model(path, precision="float32")


@pytest.fixture
def untrained_model():
    from mecca.networks import MeccaModel, NetworkConfig

    return MeccaModel.create(NetworkConfig(width=8, confidence_width=8), seed=0).eval()


@pytest.fixture
def blob_volume():
    """A synthetic bright ellipsoid in noise with anisotropic spacing and an oblique direction."""
    from mecca.volume import Volume

    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:24, :40, :36]
    label = (((k - 12) / 7.0) ** 2 + ((j - 20) / 12.0) ** 2 + ((i - 18) / 10.0) ** 2 <= 1).astype(np.uint8)
    image = (label * 100 + rng.normal(0, 10, label.shape)).astype(np.int16)
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Volume(image, spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 5.0), direction=direction.ravel()), label
