"""Training and timing where SimpleITK is not installed (a GPU machine lent with PyTorch alone).

``pack`` reads MSD datasets here into one ``.npz``: each training case on its training grid (as
``mecca train`` holds it in memory, images in 8 bits: ``_volume_fields``), the names of the held-out validation
cases, and the bundled sample; ``train`` runs ``mecca train``'s Trainer on such a file (no
validation there: score the epoch models here with ``mecca evaluate``); ``bench`` times session
rounds on the packed sample as ``mecca bench`` does; ``spread`` scores packed held-out cases on
one device and precision, to compare machines::

    python -m research.experiments.packed pack --dataset ../shared/data/Task04_Hippocampus \\
        --dataset ../shared/data/LeftAtrium2018 --out gpu/cases.npz
    # on the GPU machine, the checkout and gpu/ carried, PYTHONPATH=MECCASegment:.
    python -m research.experiments.packed train --cases gpu/cases.npz --out $OUT/a/mecca.safetensors \\
        --init Resources/Models/mecca.safetensors --device cuda --epochs 4
    python -m research.experiments.packed bench --cases gpu/cases.npz --device cuda --json $OUT/bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from mecca import training
from mecca.cases import TrainingCase, load_cases
from mecca.checkpoint import load_model
from mecca.datasets import binary_label
from mecca.errors import InputError
from mecca.io import read_volume, write_json
from mecca.networks import NetworkConfig
from mecca.recipe import read_recipe
from mecca.resources import DEFAULT_MODEL, SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
from mecca.volume import Volume

GEOMETRY = ("spacing", "origin", "direction")
QUANTILES = (0.05, 99.95)  # percent: the intensity range a packed image keeps, in 256 levels


def _volume_fields(prefix: str, volume: Volume, quantised: bool) -> dict:
    """A volume as plain arrays; ``quantised`` stores its voxels in 8 bits over its 0.05-99.95
    percentile range: what lets 240 training cases (66 M voxels) travel in 45 MB. Training sees
    intensities only through each crop's percentile clip and z-score (environment.normalize_image),
    which an affine rescaling leaves alone; the quantisation is the one approximation."""
    array = volume.array
    if quantised:
        low, high = np.percentile(array, QUANTILES)
        levels = np.rint((np.clip(array, low, high) - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
        fields = {f"{prefix}/levels_delta": np.diff(levels, axis=-1, prepend=np.uint8(0))}  # deflates 20 % better
    else:
        fields = {f"{prefix}/array": array}
    fields.update({f"{prefix}/{name}": np.asarray(getattr(volume, name), np.float64) for name in GEOMETRY})
    return fields


def _volume(data, prefix: str, name: str) -> Volume:
    if f"{prefix}/levels_delta" in data:
        array = np.cumsum(data[f"{prefix}/levels_delta"], axis=-1, dtype=np.uint8)
    else:
        array = data[f"{prefix}/array"]
    return Volume(array.astype(np.float32),
                  *(tuple(float(v) for v in data[f"{prefix}/{g}"]) for g in GEOMETRY), name)


def _packed_cases(data, kind: str, entries: list[dict]) -> list[TrainingCase]:
    """The packed cases of one kind ("case": training, "validation": held out), by their index entries."""
    return [TrainingCase(entry["name"], entry["dataset"], _volume(data, f"{kind}{number}/image", entry["name"]),
                         data[f"{kind}{number}/label"]) for number, entry in entries]


def pack(datasets: list[str], out: str, validation_fraction: float, min_working_voxels: int,
         validation_cases: int = 0) -> Path:
    """The training split of ``datasets`` (the split ``mecca train`` makes), the first
    ``validation_cases`` held-out cases of each dataset exactly as read (``spread``), and the
    sample, in one file."""
    train, validation, record = load_cases(datasets, None, validation_fraction, min_working_voxels=min_working_voxels)
    if any(case.recorded_clicks for case in train):
        raise InputError("cases with recorded clicks cannot be packed; pack labelled datasets")
    arrays, index = {}, []
    for number, case in enumerate(train):
        arrays.update(_volume_fields(f"case{number}/image", case.image, quantised=True))
        arrays[f"case{number}/label"] = case.label.astype(np.uint8)
        index.append({"name": case.name, "dataset": case.dataset})
    held_out = []
    for dataset in sorted({case.dataset for case in validation}):
        held_out += [case for case in validation if case.dataset == dataset][:validation_cases]
    for number, case in enumerate(held_out):
        arrays.update(_volume_fields(f"validation{number}/image", case.image, quantised=False))
        arrays[f"validation{number}/label"] = case.label.astype(np.uint8)
    index_held_out = [{"name": case.name, "dataset": case.dataset} for case in held_out]
    sample = read_volume(resource_path(*SAMPLE_IMAGE))
    arrays.update(_volume_fields("sample/image", sample, quantised=False))
    arrays["sample/label"] = binary_label(read_volume(resource_path(*SAMPLE_LABEL)).array).astype(np.uint8)
    record = {**record, "validation_fraction": validation_fraction, "min_working_voxels": min_working_voxels}
    arrays["index"] = np.frombuffer(json.dumps({"cases": index, "validation": index_held_out, "record": record}).encode(), np.uint8)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return Path(out)


def unpack(path: str, datasets: list[str] | None = None) -> tuple[list[TrainingCase], dict]:
    """The packed training cases (only those of the ``datasets`` named, when given) and their record."""
    with np.load(path) as data:  # plain arrays only: allow_pickle stays off
        index = json.loads(data["index"].tobytes())
        cases = _packed_cases(data, "case", [(number, entry) for number, entry in enumerate(index["cases"])
                                             if not datasets or entry["dataset"] in datasets])
    record = index["record"]
    if datasets:
        record["datasets"] = [d for d in record["datasets"] if d["name"] in datasets]
        if not cases:
            raise InputError(f"{path}: no case of {', '.join(datasets)}")
    return cases, record


def unpack_validation(path: str) -> list[TrainingCase]:
    """The held-out cases packed exactly as read (``pack``'s ``validation_cases``)."""
    with np.load(path) as data:
        return _packed_cases(data, "validation", list(enumerate(json.loads(data["index"].tobytes())["validation"])))


def spread(args) -> dict:
    """Dice per round of each packed held-out case under both click protocols, on this device and
    precision: run it on two machines (or precisions) and compare case by case."""
    from mecca.harness import simulate_mecca

    model = load_model(args.model, device=args.device, precision=args.precision)
    result = {"device": args.device, "precision": str(model.dtype).removeprefix("torch."), "users": {}}
    for user in ("edge", "interior"):
        result["users"][user] = {f"{case.dataset}/{case.name}": simulate_mecca(model, case.image, case.label,
                                                                               user=user)[0].dice
                                 for case in unpack_validation(args.cases)}
    write_json(result, args.json)
    print(json.dumps(result), flush=True)
    return result


def unpack_sample(path: str) -> tuple[Volume, np.ndarray]:
    with np.load(path) as data:
        return _volume(data, "sample/image", "sample"), data["sample/label"]


def train(args) -> Path:
    """``mecca train`` (mecca.training.train: the same schedules and defaults) on the packed cases."""
    cases, record = unpack(args.cases, args.only)
    return training.train([], args.out, init=args.init, recipe=read_recipe(args.config) if args.config else None,
                          epochs=args.epochs, learning_rate=args.lr, seed=args.seed, device=args.device,
                          save_every_s=args.save_every_s, json_progress=True,
                          cases=(cases, [], {**record, "packed_from": args.cases}))


def bench(args) -> dict:
    from mecca.bench import bench_roi
    from mecca.provenance import machine_description

    image, label = unpack_sample(args.cases)
    model = load_model(args.model, device=args.device, precision=args.precision)
    result = {"machine": machine_description(args.device), "precision": str(model.dtype).removeprefix("torch."),
              "model": str(args.model or resource_path(*DEFAULT_MODEL)), "image": "bundled sample", "rois": {}}
    for size in [int(v) for v in args.roi.split(",")]:
        result["rois"][str(size)] = bench_roi(model, image, label, size, args.repeats)
        write_json(result, args.json)  # after each size: a lease that ends early keeps what was timed
        print(size, json.dumps(result["rois"][str(size)]), flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packer = sub.add_parser("pack", help="MSD datasets -> one .npz of training cases (needs SimpleITK)")
    packer.add_argument("--dataset", action="append", required=True)
    packer.add_argument("--out", required=True)
    packer.add_argument("--validation-fraction", type=float, default=0.2)
    packer.add_argument("--min-working-voxels", type=int, default=NetworkConfig().min_working_voxels)
    packer.add_argument("--validation-cases", type=int, default=0, help="held-out cases per dataset kept exactly (spread)")
    trainer = sub.add_parser("train", help="mecca train on a packed file (no SimpleITK needed)")
    trainer.add_argument("--cases", required=True)
    trainer.add_argument("--out", required=True)
    trainer.add_argument("--only", action="append", help="train on this packed dataset's cases alone (repeatable)")
    trainer.add_argument("--init")
    trainer.add_argument("--config")
    trainer.add_argument("--epochs", type=int)
    trainer.add_argument("--lr", type=float)
    trainer.add_argument("--seed", type=int)
    trainer.add_argument("--device", default="cpu")
    trainer.add_argument("--save-every-s", type=float, default=60.0)
    timer = sub.add_parser("bench", help="session rounds on the packed sample (no SimpleITK needed)")
    spreader = sub.add_parser("spread", help="Dice per round of the packed held-out cases on this device and precision")
    for session_command in (timer, spreader):
        session_command.add_argument("--cases", required=True)
        session_command.add_argument("--json", required=True)
        session_command.add_argument("--model", help="default: the bundled model")
        session_command.add_argument("--device", default="cpu")
        session_command.add_argument("--precision", default="auto")
    timer.add_argument("--roi", default="64,128,256")
    timer.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(f"wrote {pack(args.dataset, args.out, args.validation_fraction, args.min_working_voxels, args.validation_cases)}")
    elif args.command == "train":
        print(f"wrote {train(args)}")
    elif args.command == "spread":
        spread(args)
    else:
        bench(args)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
