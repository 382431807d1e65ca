"""The README: its commands are the ones CI runs, and the scripts behind its figures do what the docs say."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    blocks = text.split("```")[1::2]
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    commands = _commands((ROOT / "README.md").read_text())
    assert len(commands) == 2 and commands[0].endswith("mecca demo") and commands[1].endswith("python -m pytest -q")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_the_intensity_changes_behind_the_readme_figures_are_what_results_md_says():
    """docs/results/intensity_changes.py on the bundled (real) scan: inverted = 1 - u, gamma 2 = u²,
    the bias field spans 0.3-1.7 times u, the noise repeats with its seed, unknown names are refused."""
    import importlib.util
    import sys

    import numpy as np
    import pytest
    from MECCASegmentLib.io import read_volume
    from MECCASegmentLib.resources import SAMPLE_IMAGE, resource_path

    scripts = ROOT / "docs" / "results"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location("intensity_changes", scripts / "intensity_changes.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    array = read_volume(str(resource_path(*SAMPLE_IMAGE))).array
    low, high = np.percentile(array, [0.5, 99.5])
    unit = np.clip((array - low) / (high - low), 0, 1)
    assert np.allclose(module.changed(array, "none", 0), array)
    assert np.allclose(module.changed(array, "inverted", 0), 1 - unit, atol=1e-6)
    assert np.allclose(module.changed(array, "gamma 2", 0), unit**2, atol=1e-6)
    ratio = module.changed(array, "bias field", 0)[unit > 0.1] / unit[unit > 0.1]
    assert 0.3 - 1e-5 <= ratio.min() < 0.5 and 1.5 < ratio.max() <= 1.7 + 1e-5
    noisy = module.changed(array, "noise", 3)
    assert np.array_equal(noisy, module.changed(array, "noise", 3)) and abs(float((noisy - unit).std()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="unknown change"):
        module.changed(array, "blur", 0)
