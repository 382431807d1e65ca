"""The engine's public API: every name in ``mecca.__all__`` resolves, and importing the package
loads nothing heavy until a name is used."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_resolves():
    import mecca

    for name in mecca.__all__:
        assert getattr(mecca, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Session'"):
        mecca.Session  # noqa: B018


def test_importing_the_package_or_its_geometry_loads_neither_torch_nor_slicer():
    code = ("import sys, mecca, mecca.geometry; "
            "print(sorted(m for m in ('torch', 'SimpleITK', 'slicer', 'vtk', 'qt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "MECCASegment", capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_load_model_without_a_path_is_the_bundled_model():
    from mecca import load_model
    from mecca.resources import DEFAULT_MODEL, resource_path

    try:
        path = resource_path(*DEFAULT_MODEL)
    except FileNotFoundError:
        pytest.skip("the bundled model is not there")
    assert load_model().metadata == load_model(path).metadata
