"""Small helpers shared by test modules (fixtures live in conftest.py)."""

import json
import shutil
from pathlib import Path


def copy_msd_cases(source: Path, root: Path, count: int) -> Path:
    """A new MSD folder at ``root`` holding the first ``count`` training cases of ``source``."""
    manifest = json.loads((source / "dataset.json").read_text())
    entries = manifest["training"][:count]
    for entry in entries:
        for key in ("image", "label"):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / entry[key], root / entry[key])
    (root / "dataset.json").write_text(json.dumps({**manifest, "training": entries, "numTraining": count}))
    return root


class FileCreatingPickle:
    """Unpickling this creates ``target``: the file proves whether a loader ran the pickle."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))
