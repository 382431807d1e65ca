"""mecca: interactive 3D segmentation with MECCA, the engine of the MECCASegment Slicer extension.

Pure Python (numpy, torch, SimpleITK, scikit-image); it never imports slicer, qt or vtk. The
public API::

    from mecca import InteractiveSession, load_model, read_volume, Click

    image = read_volume("scan.nii.gz")             # a Volume: voxels + geometry
    session = InteractiveSession(image, load_model())  # the bundled model
    session.add_click((i, j, k), positive=True)    # ITK/Slicer voxel indices
    summary = session.step()                       # one round: a RoundSummary
    session.mask, session.confidence_map(), session.advice_regions

Training and evaluation: ``train`` (``mecca train``) and ``evaluate`` (``mecca evaluate``).
Names are imported on first use, so ``import mecca.geometry`` (stdlib only) stays light.
"""

from importlib import import_module

_PUBLIC = {
    "InteractiveSession": "session", "RoundSummary": "session", "AUTO_STEPS": "defaults",
    "load_model": "checkpoint", "save_model": "checkpoint",
    "MeccaModel": "networks", "NetworkConfig": "networks",
    "Volume": "volume", "read_volume": "io", "write_volume": "io", "MSDDataset": "datasets",
    "Click": "clicks", "read_clicks": "clicks",
    "SimulatedUser": "users",
    "InputError": "errors", "SessionError": "errors", "CheckpointError": "errors",
    "train": "training", "TrainingConfig": "training",
    "evaluate": "harness", "simulate": "harness",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mecca' has no attribute {name!r}")
    return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
