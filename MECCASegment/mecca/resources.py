"""Where the bundled files (default model, demo sample) live.

In a source checkout or an editable install they are in the extension's top-level
``Resources/``; a wheel carries the same files inside the package (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_ROOTS = (_PACKAGE_DIR / "Resources", _PACKAGE_DIR.parents[1] / "Resources")

DEFAULT_MODEL = ("Models", "mecca.safetensors")
SAMPLE_IMAGE = ("SampleData", "hippocampus_sample.nii.gz")
SAMPLE_LABEL = ("SampleData", "hippocampus_sample_label.nii.gz")


def resource_path(*parts: str) -> Path:
    """Path of a bundled file; FileNotFoundError naming the places looked at."""
    for root in _ROOTS:
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"bundled file {'/'.join(parts)} not found in {', '.join(str(r) for r in _ROOTS)}; "
                            "reinstall MECCASegment")
