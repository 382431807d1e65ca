"""Model files: weights as safetensors (no pickle, nothing executed on load) plus JSON metadata.

A model file holds the networks (``policy.*``, ``confidence.*``, and the split architecture's
``encoder.*``) and, in the safetensors header, a ``mecca`` entry with the format version, the
architecture, the input normalisation, the training data and command, and measured metrics. A training-state file adds the Adam
moments and the position in the run, so training resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .defaults import DEVICES
from .errors import CheckpointError, InputError
from .io import atomic_path
from .networks import NETWORK_NAMES, MeccaModel, NetworkConfig

FORMAT = "mecca-model"
FORMAT_VERSION = 1
MODEL_SUFFIX = ".safetensors"


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when PyTorch sees a GPU, else "cpu"; a clear error for an unusable choice.
    The command line and the Slicer module both resolve their device option here."""
    if device not in DEVICES:
        raise InputError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda: this PyTorch sees no CUDA GPU; choose cpu or auto")
    return device


def write_model_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Tensors and JSON metadata as a safetensors file, written atomically (no pickle: reading it
    never runs code)."""
    with atomic_path(path, MODEL_SUFFIX) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    return path


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a model file written by this project, checked: CheckpointError naming
    what is wrong for a missing, pickled, truncated or foreign file, or another format version."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model file not found; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a model file; choose the {MODEL_SUFFIX} file itself")
    if path.suffix != MODEL_SUFFIX:
        raise CheckpointError(f"{path}: not a MECCA model; model files are {MODEL_SUFFIX} files "
                              "(pickled .pt/.pth files are refused because loading them can run code)")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated model file ({error}); copy or download it again") \
            from error
    if "mecca" not in header:
        raise CheckpointError(f"{path}: a safetensors file without MECCA metadata; not a MECCA model: choose a file "
                              "written by mecca train")
    try:
        meta = json.loads(header["mecca"])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: damaged MECCA metadata ({error}); copy or download the file again") from error
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; not a MECCA model: choose a "
                              "file written by mecca train")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: model format version {version} but this MECCASegment reads version "
                              f"{FORMAT_VERSION}; use a model made for this version or update MECCASegment")
    return tensors, meta


def save_model(model: MeccaModel, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "network": model.config.to_dict(),
            **(model.metadata or {}), **(metadata or {})}
    return write_model_file(model.state_dict(), {"mecca": json.dumps(meta)}, Path(path))


def _network_config(meta: dict, path: Path) -> NetworkConfig:
    try:
        return NetworkConfig.from_dict(meta["network"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unusable architecture description ({error})") from error


def finite_weights(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The networks' weights; NaN or infinity (a diverged run) is refused rather than segmenting
    every voxel as NaN, or resuming a run that can only produce NaN."""
    weights = {k: v for k, v in tensors.items() if k.startswith(tuple(f"{name}." for name in NETWORK_NAMES))}
    for name, value in weights.items():
        if not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: weight {name} contains NaN or infinite values (the run that made it "
                                  "diverged); use an earlier model file or train again with a lower --lr")
    return weights


def _build(tensors: dict[str, torch.Tensor], meta: dict, path: Path) -> MeccaModel:
    model = MeccaModel.create(_network_config(meta, path))
    weights = finite_weights(tensors, path)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match the architecture the file describes "
                              f"({str(error).splitlines()[0]})") from error
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "format_version", "network")}
    return model.eval()


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               precision: str = "float32") -> MeccaModel:
    """Load a model file (or the weights of a training state) for inference.

    Parameters
    ----------
    path : path, optional
        A ``.safetensors`` model file written by ``mecca train``; default: the bundled model.
    device : str or torch.device
        Where the networks run ("cpu", "cuda", ...).
    precision : {"float32", "bfloat16", "auto"}
        Inference precision (``MeccaModel.prepare_for_inference``; "auto" = bfloat16 where the
        processor computes it natively).

    Returns
    -------
    MeccaModel
        The networks with the file's metadata (training record, lineage, session defaults).

    Raises
    ------
    CheckpointError
        A missing, pickled, truncated or foreign file, another format version, or non-finite
        weights; the message says which. Loading never runs code from the file.
    """
    if path is None:
        from .resources import DEFAULT_MODEL, resource_path

        path = resource_path(*DEFAULT_MODEL)
    tensors, meta = read_model_file(Path(path))
    return _build(tensors, meta, Path(path)).to(device).prepare_for_inference(precision)


def save_training_state(path: str | os.PathLike, model: MeccaModel, optimizer: torch.optim.Optimizer,
                        progress: dict, metadata: dict) -> Path:
    """Weights, Adam moments and the run position, so an interrupted run resumes exactly."""
    tensors = model.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    steps = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            name = names[id(param)]
            tensors[f"adam.exp_avg.{name}"] = state["exp_avg"]
            tensors[f"adam.exp_avg_sq.{name}"] = state["exp_avg_sq"]
            steps[name] = float(state["step"])
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "network": model.config.to_dict(),
            "kind": "training_state", "training_state": {"progress": progress, "adam_steps": steps}, **metadata}
    return write_model_file(tensors, {"mecca": json.dumps(meta)}, Path(path))


def load_training_state(path: str | os.PathLike, model: MeccaModel, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights and Adam moments in place; returns the saved metadata (progress, config)."""
    path = Path(path)
    tensors, meta = read_model_file(path)
    if "training_state" not in meta:
        raise CheckpointError(f"{path}: a model file, not a training state")
    if _network_config(meta, path) != model.config:
        raise CheckpointError(f"{path}: the saved run used another architecture; start a new run or use its settings")
    weights = finite_weights(tensors, path)
    params = dict(model.named_parameters())
    try:
        moments = {params[name]: {"step": torch.tensor(step),  # Adam keeps its step count on the CPU
                                  "exp_avg": tensors[f"adam.exp_avg.{name}"].to(params[name].device, copy=True),
                                  "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].to(params[name].device, copy=True)}
                   for name, step in meta["training_state"]["adam_steps"].items()}
        model.load_state_dict(weights)
    except (KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: incomplete training state ({error}); start over with --restart") from error
    optimizer.state.update(moments)
    return meta
