"""The ``mecca`` command: demo, segment, train, evaluate, bench, info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .datasets import binary_label
from .defaults import (
    AUTO_STEPS,
    KNOWN_STRUCTURE,
    KNOWN_STRUCTURE_DICE,
    NEW_MODEL,
    NEW_STRUCTURE,
    START_ESTIMATES,
    USER_STYLES,
    checked_lean_correction,
)
from .errors import CheckpointError, InputError, SessionError
from .geometry import ijk_from_kji
from .io import check_nifti_size, read_volume, write_json, write_volume
from .resources import DEFAULT_MODEL, SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
from .volume import validate_image

# The networks (PyTorch) load inside the commands that run them: --version and --help start at once.
if TYPE_CHECKING:
    from .session import InteractiveSession


def _model(path: str | None, device: str = "cpu", precision: str = "auto"):
    from .checkpoint import load_model, resolve_device

    return load_model(path or resource_path(*DEFAULT_MODEL), device=resolve_device(device), precision=precision)


def _focus_slice(mask: np.ndarray) -> int:
    """Axial slice with the largest cross-section of ``mask`` (middle slice when empty)."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else mask.shape[0] // 2


def _crop_around(box, shape, pad: int = 4):
    (_, j0, i0), (_, j1, i1) = box
    return (slice(max(j0 - pad, 0), min(j1 + pad, shape[1])), slice(max(i0 - pad, 0), min(i1 + pad, shape[2])))


def write_session_outputs(session: InteractiveSession, out: Path, snapshots, label: np.ndarray | None,
                          slice_k: int, summary: dict, title: str) -> None:
    """Segmentation, probability, confidence, advice regions (NIfTI, input geometry), montage, summary."""
    from .report import SliceView, write_montage

    image = session.image
    write_volume(image.with_array(session.mask), out / "segmentation.nii.gz")
    write_volume(image.with_array(session.probability), out / "probability.nii.gz")
    write_volume(image.with_array(session.confidence_map()), out / "confidence.nii.gz")
    write_volume(image.with_array(session.advice_map()), out / "advice_regions.nii.gz")
    crop = _crop_around(session.last_box, image.shape) if session.last_box else None
    write_montage(out / "montage.png", image.array[slice_k].astype(np.float32), snapshots, SliceView.of(image, slice_k),
                  None if label is None else label[slice_k], crop, title)
    write_json(summary, out / "summary.json")


def _print(message: str) -> None:
    print(message, flush=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _output_folder(out: Path) -> Path:
    """The --out folder, checked before any work starts: a name taken by a file, or a place where no
    folder can be made, is refused at once rather than after the segmentation has run."""
    import os

    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file; give the name of a folder (new or existing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: no permission to write in {existing}; choose a folder you can write to")
    return out


# -- demo ---------------------------------------------------------------------------------------
def run_demo(out: Path, model_path: str | None, rounds: int, clicks_per_round: int, seed: int, device: str,
             precision: str = "auto") -> dict:
    from .harness import simulate_mecca
    from .report import snapshot

    started = time.perf_counter()
    out = _output_folder(out)
    model = _model(model_path, device, precision)
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = binary_label(read_volume(resource_path(*SAMPLE_LABEL)).array)
    slice_k = _focus_slice(label)
    snapshots = []
    _print(f"MECCA demo: {image.name} {image.size_ijk} voxels, {_plural(rounds, 'round')} x "
           f"{_plural(clicks_per_round, 'simulated click')}, model {model.metadata.get('name', 'bundled')}")

    def on_round(method, clicks, dice):
        snapshots.append(snapshot(method.session, slice_k, clicks, dice))
        last = method.session.history[-1]
        _print(f"  round {method.session.rounds}/{rounds}: {_plural(len(clicks), 'click')}, Dice {dice:.3f}, "
               f"{last['seconds']:.2f} s, advice regions {[r.rank for r in method.session.advice_regions]}")

    run, session = simulate_mecca(model, image, label, rounds, clicks_per_round, seed=seed, on_round=on_round)
    summary = {"image": image.name, "rounds": rounds, "clicks_per_round": clicks_per_round, "seed": seed,
               "dice_per_round": run.dice, "seconds_per_round": [round(s, 4) for s in run.seconds],
               "misunderstanding_rate_per_round": [round(m, 6) for m in run.misunderstanding],
               "history": session.history}
    write_session_outputs(session, out, snapshots, label, slice_k, summary,
                          f"MECCA demo on {image.name}: Dice against the expert label per round "
                          f"{', '.join(f'{d:.3f}' for d in run.dice)}")
    _print(f"wrote {out}/ (segmentation, probability, confidence, advice_regions .nii.gz, montage.png, "
           f"summary.json) in {time.perf_counter() - started:.1f} s")
    return summary


# -- segment ------------------------------------------------------------------------------------
def run_segment(image_path: str, clicks_path: str, out: Path, model_path: str | None, rounds: int | None,
                device: str, label_path: str | None = None, precision: str = "auto", steps_per_round: int | str | None = None,
                flip_average: bool = False, lean_correction: float | None = None, start_estimate: str = "none") -> dict:
    from .clicks import Click, read_clicks
    from .metrics import dice
    from .report import snapshot
    from .session import InteractiveSession

    out = _output_folder(out)
    image = read_volume(image_path)
    validate_image(image.array, image.spacing, name=image.name)  # an all-NaN image is refused before any note
    check_nifti_size(image.size_ijk, image.name)  # the outputs must be writable before the work starts
    non_finite = int(np.count_nonzero(~np.isfinite(image.array))) if image.array.dtype.kind == "f" else 0
    if non_finite:
        _print(f"note: {non_finite} voxels of {image.name} are NaN or infinite; they take the lowest finite value of "
               "the region the networks see")
    clicks_by_round, roi = read_clicks(Path(clicks_path), image)
    label = binary_label(read_volume(label_path).array) if label_path else None
    if label is not None and label.shape != image.shape:
        raise InputError(f"--label {label_path}: size {ijk_from_kji(label.shape)} differs from the image's {image.size_ijk}")
    if label is not None and not label.any():
        raise InputError(f"--label {label_path}: no voxel is foreground (all 0); a Dice against it means nothing: "
                         "give the reference segmentation, or leave --label out")
    model = _model(model_path, device, precision)
    rounds = rounds or max(clicks_by_round)
    session = InteractiveSession(image, model, roi=roi, steps_per_round=steps_per_round, flip_average=flip_average,
                                 lean_correction=lean_correction, start_estimate=start_estimate)
    first = clicks_by_round[min(clicks_by_round)][0][0]
    slice_k = int(np.clip(round(first[2]), 0, image.shape[0] - 1))
    snapshots, dices, seconds = [], [], []
    _print(f"MECCA segment: {image.name} {image.size_ijk} voxels, {_plural(rounds, 'round')}")
    for round_ in range(1, rounds + 1):
        added = [session.add_click(ijk, positive) for ijk, positive in clicks_by_round.get(round_, [])]
        summary = session.step()
        score = dice(session.mask, label) if label is not None else None
        dices.append(score)
        seconds.append(round(summary["seconds"], 4))
        snapshots.append(snapshot(session, slice_k, [Click(c.position, c.positive) for c in added], score))
        _print(f"  round {round_}/{rounds}: {_plural(len(added), 'new click')}, {summary['foreground_voxels_in_roi']} "
               f"foreground voxels, {summary['seconds']:.2f} s" + (f", Dice {score:.3f}" if score is not None else ""))
    summary = {"image": str(image_path), "rounds": rounds, "steps_per_round": session.steps_per_round,
               "flip_average": flip_average, "lean_correction": session.lean_correction, "dice_per_round": dices,
               "seconds_per_round": seconds,
               "clicks": [{"round": number, "ijk": list(ijk_from_kji(c.position)),
                           "lps_mm": [round(float(v), 3) for v in image.index_to_world(ijk_from_kji(c.position))],
                           "positive": c.positive}
                          for number, clicks in enumerate(session.clicks_by_round, start=1) for c in clicks],
               "history": session.history}
    write_session_outputs(session, out, snapshots, label, slice_k, summary, f"MECCA on {image.name}")
    _print(f"wrote {out}/")
    return summary


# -- train --------------------------------------------------------------------------------------
def parse_labels(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as error:
        raise InputError(f"--labels takes comma-separated integers such as 1,2; got {text!r}") from error


def run_train(args) -> Path:
    from .checkpoint import resolve_device
    from .progress import event_line
    from .recipe import read_recipe
    from .training import train

    say = (lambda text: print(event_line("info", message=text), flush=True)) if args.progress == "jsonl" else _print
    return train(args.dataset, args.out, init=args.init, recipe=read_recipe(args.config) if args.config else None,
                 epochs=args.epochs, learning_rate=args.lr, seed=args.seed,
                 validation_fraction=args.validation_fraction, labels=parse_labels(args.labels),
                 unlabeled=args.unlabeled or [], device=resolve_device(args.device), restart=args.restart,
                 skip_bad=args.skip_bad, save_every_s=args.save_every_s, json_progress=args.progress == "jsonl",
                 say=say)


# -- evaluate -----------------------------------------------------------------------------------
def run_evaluate(args) -> dict:
    """MECCA model files (the bundled one by default) under the seeded simulated user."""
    from .checkpoint import load_model, resolve_device
    from .harness import MeccaMethod

    dataset, cases = evaluation_cases(args)
    factories, used_models = {}, {}
    for path in args.model or [resource_path(*DEFAULT_MODEL)]:
        model = load_model(path, device=resolve_device(args.device), precision=args.precision)
        name = Path(path).name.removesuffix(".safetensors")
        name = name if name not in factories else f"{name} ({len(factories) + 1})"
        used_models[name] = {"path": str(path), "inference": model.inference}
        factories[name] = lambda m=model, n=name: MeccaMethod(m, n, args.steps_per_round, args.flip_average,
                                                               args.lean_correction, args.start)
    return evaluation_report(args, dataset, cases, factories, used_models)


def add_session_options(parser: argparse.ArgumentParser) -> None:
    """The options of the sessions a command runs (device, precision, how a round runs); the round
    settings default to the model file's own."""
    add_device_option(parser)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    parser.add_argument("--steps-per-round", type=_steps_per_round, help=STEPS_HELP)
    parser.add_argument("--flip-average", action="store_true", help=FLIP_HELP)
    parser.add_argument("--lean-correction", type=_lean_correction, help=LEAN_HELP)
    parser.add_argument("--start", choices=START_ESTIMATES, default="none", help=START_HELP)


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The options of an evaluation under the simulated user (``mecca evaluate`` and the research
    harness's comparison share them)."""
    parser.add_argument("--dataset", required=True, help="MSD folder")
    parser.add_argument("--labels", help="label values that count as foreground (default: all non-zero)")
    parser.add_argument("--user", choices=USER_STYLES[:2], default="edge",
                        help="where the simulated user clicks: edge = misclassified voxels near the true surface (the "
                             "paper's protocol), interior = the deepest point of the largest error regions (as a person "
                             "clicks); every method gets the same points (default: edge)")
    parser.add_argument("--rounds", type=_whole_steps, default=5, help="rounds of simulated clicks (default: 5)")
    parser.add_argument("--clicks-per-round", type=_whole_steps, default=3,
                        help="simulated clicks before each round (default: 3)")
    parser.add_argument("--split", choices=["validation", "all"], default="validation",
                        help="validation: the cases training held out (same split as mecca train; default)")
    parser.add_argument("--validation-fraction", type=_fraction, default=0.2,
                        help="the held-out share the split is drawn with (default: 0.2, as mecca train)")
    parser.add_argument("--cases", type=_whole_steps, help="only the first N cases (sorted by name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated user (default: 0)")
    add_session_options(parser)
    parser.add_argument("--json", required=True, help="results file")
    parser.add_argument("--plot", help="figure: Dice per round per method + one case per method")


def evaluation_cases(args):
    """(dataset, the cases to evaluate) from the evaluation options."""
    from .datasets import MSDDataset

    dataset = MSDDataset.open(args.dataset)
    cases = dataset.validation_cases(args.validation_fraction) if args.split == "validation" \
        else sorted(dataset.cases, key=lambda c: c.name)
    return dataset, cases[: args.cases] if args.cases else cases


def evaluation_report(args, dataset, cases, factories: dict, used_models: dict) -> dict:
    """Run ``factories``' methods on ``cases`` (harness.evaluate), write the JSON and the figure,
    print the table; returns the result."""
    import platform

    import torch

    from .harness import evaluate
    from .provenance import command_line
    from .report import write_evaluation_figure

    _print(f"evaluating {', '.join(factories)} on {len(cases)} cases of {dataset.name} ({args.split} split), "
           f"{_plural(args.rounds, 'round')} x {_plural(args.clicks_per_round, f'{args.user} click')}, "
           + (f"{args.steps_per_round} policy step(s) per round" if args.steps_per_round is not None
              else "the model's policy steps per round") + (", policy averaged over flips" if args.flip_average else ""))
    summary, failures, figure_case = evaluate(cases, factories, parse_labels(args.labels), args.rounds,
                                              args.clicks_per_round, args.seed, user=args.user)
    result = {"dataset": dataset.name, "labels": args.labels, "user": args.user, "start": args.start, "rounds": args.rounds,
              "clicks_per_round": args.clicks_per_round, "steps_per_round": args.steps_per_round,
              "flip_average": args.flip_average, "lean_correction": args.lean_correction, "cases": len(cases),
              "split": args.split, "seed": args.seed, "methods": summary, "failures": failures,
              "models": used_models, "command": command_line(),
              "machine": f"{platform.machine()} {platform.processor()}, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads, device {args.device}, precision {args.precision}"}
    write_json(result, args.json)
    for failure in failures:
        _print(f"failed: {failure['case']} ({failure['method'] or 'reading'}): {failure['error']}")
    for name, stats in summary.items():
        if stats.get("cases"):
            _print(f"{name:16s} Dice/round {stats['dice_mean_per_round']}  ASSD mm (round {args.rounds}) "
                   f"{stats['assd_mm_mean_per_round'][-1]:.2f}  misunderstanding "
                   f"{stats['misunderstanding_rate_per_round'][-1]:.4f}  median {stats['seconds_per_round_median']:.3f} s/round")
    if args.plot:
        write_evaluation_figure(args.plot, summary, figure_case, f"{dataset.name}: {len(cases)} cases, "
                                f"{args.clicks_per_round} simulated {args.user} clicks per round")
    _print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return result


# -- bench --------------------------------------------------------------------------------------
def run_bench(args) -> dict:
    import torch

    from .bench import bench_big_volume, bench_roi
    from .checkpoint import resolve_device
    from .provenance import machine_description

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sizes = [int(v) for v in args.roi.split(",")]
    except ValueError as error:
        raise InputError(f"--roi takes comma-separated sizes such as 64,96,128; got {args.roi!r}") from error
    if any(s < 8 for s in sizes):
        raise InputError("--roi sizes must be at least 8 voxels")
    model = _model(args.model, args.device, args.precision)
    image = read_volume(args.image or resource_path(*SAMPLE_IMAGE))
    label = binary_label(read_volume(args.label or resource_path(*SAMPLE_LABEL)).array)
    result = {"machine": machine_description(resolve_device(args.device)), "precision": str(model.dtype).removeprefix("torch."),
              "model": str(args.model or resource_path(*DEFAULT_MODEL)), "image": image.name,
              "steps_per_round": args.steps_per_round, "flip_average": args.flip_average, "rois": {}}
    for size in sizes:
        _print(f"ROI {size}^3 ...")
        result["rois"][str(size)] = bench_roi(model, image, label, size, args.repeats,
                                              steps_per_round=args.steps_per_round, flip_average=args.flip_average)
    if not args.no_big_volume:
        _print("512 x 512 x 300 volume ...")
        result["big_volume"] = bench_big_volume(args.model or str(resource_path(*DEFAULT_MODEL)), args.precision,
                                                torch.get_num_threads())
    write_json(result, args.json)
    _print(format_bench_table(result))
    _print(f"wrote {args.json}")
    return result


def format_bench_table(result: dict) -> str:
    machine = result["machine"]
    lines = [f"{machine['processor']}, {machine['threads']} threads, torch {machine['torch']}, {machine['device']}, "
             f"{result['precision']}",
             f"{'ROI':>5} {'steps':>5} {'MECCA round s':>15} {'p90':>6} "
             f"{'GFLOP/s':>8} {'peak':>6} {'of peak':>8} {'of best layer':>14}"]
    for size, r in result["rois"].items():
        lines.append(f"{size:>5} {r['policy_steps']:>5} {r['mecca_round_s']['median']:>15.3f} {r['mecca_round_s']['p90']:>6.3f} "
                     f"{r['policy_gflops_achieved']:>8.1f} "
                     f"{r['conv3d_peak_gflops']:>6.1f} {r['policy_fraction_of_peak']:>8.0%} "
                     f"{r['policy_fraction_of_best_layer']:>14.0%}")
        lines.append("      parts (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["parts_s"].items())
                     + f"; supervoxels per ROI {r['advice_precompute_s']['median']:.2f}")
    if "big_volume" in result:
        big = result["big_volume"]
        lines.append(f"512x512x300: session opens in {big['session_open_s']:.3f} s, first round {big['first_round_s']:.3f} s, "
                     f"peak RSS {big['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


# -- info ---------------------------------------------------------------------------------------
def run_info(model_path: str | None, card: bool = False, as_json: bool = False) -> dict:
    model = _model(model_path)
    path = Path(model_path or resource_path(*DEFAULT_MODEL))
    if card:
        from .report import model_card

        print(model_card(path, model.metadata, model.config.to_dict()))
        return model.metadata
    info = {"network": model.config.to_dict(), **{k: v for k, v in model.metadata.items() if k != "training"}}
    training = model.metadata.get("training", {})
    info["training"] = {k: v for k, v in training.items() if k != "history"}
    print(json.dumps(info, indent=2) if as_json else model_summary(path, model))
    return info


def model_summary(path: Path, model) -> str:
    """A few lines a person reads: what the file is, how it was trained, on what, what it measured."""
    from .report import evaluated_structure

    config, metadata = model.config, model.metadata
    training = metadata.get("training", {})
    weights = sum(p.numel() for p in model.parameters())
    lines = [f"{path.name}: MECCA model, {config.architecture} architecture (width {config.width}, stride "
             f"{config.stride}), {weights:,} weights, {config.hint_encoding} hints"]
    if training:
        hours = (training.get("wall_time_s") or 0) / 3600
        stages = len(metadata.get("lineage", []))
        lines.append(f"last trained: {training.get('config', {}).get('epochs', '?')} epochs, {hours:.2f} h, "
                     f"{training.get('machine', '?')}" + (f"; {stages} earlier stages" if stages else ""))
        for dataset in training.get("data", {}).get("datasets", []):
            lines.append(f"  data: {dataset['name']}, {dataset['cases']} cases ({len(dataset['validation'])} held out)")
    if metadata.get("weight_average_of"):
        lines.append(f"weights: the mean of {', '.join(metadata['weight_average_of'])}")
    lines.append("session defaults: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in model.inference.items()))
    for evaluation in metadata.get("metrics", {}).get("evaluations", []):
        lines.append(f"  evaluated: {evaluated_structure(evaluation)}, {evaluation['user']} user, {evaluation['cases']} cases: "
                     f"Dice {evaluation['dice_mean_per_round'][-1]:.3f} after round {len(evaluation['dice_mean_per_round'])}")
    lines.append("mecca info --card prints the whole Markdown card, --json the whole record")
    return "\n".join(lines)


PRECISIONS = ["auto", "float32", "bfloat16"]
PRECISION_HELP = "inference precision; auto = bfloat16 where the processor computes it natively"


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device, as every command that runs the networks takes it (resolve_device reads it)."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where the networks run; auto = a CUDA GPU when there is one, else the CPU (default: cpu)")


def _version() -> str:
    """The installed package's version (a checkout run without installing says so)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meccasegment")
    except PackageNotFoundError:
        return "(not installed: run from a checkout)"


def _whole_steps(text: str, accepted: str = "a whole number") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


def _lean_correction(text: str) -> float:
    try:
        return checked_lean_correction(float(text))
    except (ValueError, InputError) as error:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text!r}") from error


def _steps_per_round(text: str) -> int | str:
    return text if text == AUTO_STEPS else _whole_steps(text, f"a whole number or {AUTO_STEPS!r}")


STEPS_HELP = ("policy steps per round with the same clicks: a number (1: the paper's round; more: fewer rounds, more time) "
              "or 'auto' (3 on ROIs up to 80^3 voxels, fewer on larger ones, within the round's time budget; default: "
              "the model's own, auto for the bundled one)")
LEAN_HELP = ("lower the policy's 'up' scores by this much in every round after the first (0: the policy's own "
             "decisions; default: the model's own, 0.5 for models that lean towards foreground)")
START_HELP = ("what the first round starts from: none = p 0.5 in the ROI (the paper's start); random-walker = the "
              "random walker's mask on the first round's clicks, which the policy refines (for structures the model "
              "was not trained on; default: none)")
FLIP_HELP = ("average the policy over the ROI and its three single-axis flips: about a Dice point more, at 4x the "
             "policy's time")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mecca", description="MECCA interactive 3D segmentation (engine of "
                                                               "the MECCASegment Slicer extension)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the bundled model on the bundled sample with a simulated user")
    demo.add_argument("--out", default="mecca-demo", help="output folder (default ./mecca-demo)")
    demo.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    demo.add_argument("--rounds", type=_whole_steps, default=5, help="rounds of simulated clicks (default: 5)")
    demo.add_argument("--clicks-per-round", type=_whole_steps, default=3,
                      help="simulated clicks before each round (default: 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the simulated user (default: 0)")
    add_device_option(demo)
    demo.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)

    segment = sub.add_parser("segment", help="segment an image from clicks given in world coordinates")
    segment.add_argument("--image", required=True, help="NIfTI, NRRD or MHA image")
    segment.add_argument("--clicks", required=True,
                         help='JSON: {"coordinate_system": "RAS"|"LPS", "clicks": [{"point": [x,y,z], '
                              '"positive": true, "round": 1}], "roi": {"min": [..], "max": [..]} (optional)}')
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--model", help="model file; default: the bundled model")
    segment.add_argument("--rounds", type=_whole_steps, help="rounds to run (default: the last round in the clicks file)")
    segment.add_argument("--label", help="optional reference segmentation: report Dice per round")
    add_session_options(segment)

    train = sub.add_parser("train", help="train (or fine-tune with --init) on MSD-layout datasets")
    train.add_argument("--dataset", action="append", required=True, help="MSD folder (repeat for several)")
    train.add_argument("--labels", help="label values that count as foreground, e.g. 1,2 (default: all non-zero)")
    train.add_argument("--unlabeled", action="append",
                       help="MSD folder of cases segmented interactively but never labelled (image + recorded clicks); "
                            "they train through the confidence's simulated labels (paper eq. 6)")
    train.add_argument("--out", required=True,
                       help="model file to write (.safetensors); state and log in <name>.run/ beside it (m.run/ for m.safetensors)")
    train.add_argument("--init", help="start from this model (fine-tuning: its own gentler schedule, see --lr)")
    train.add_argument("--epochs", type=_whole_steps, help=f"passes over the training cases (default: "
                       f"{NEW_MODEL['epochs']} for a new model; with --init {KNOWN_STRUCTURE['epochs']} where the model "
                       f"already segments the cases, else {NEW_STRUCTURE['epochs']})")
    train.add_argument("--lr", type=float, help=f"Adam learning rate, cosine decay to a tenth (default: "
                       f"{NEW_MODEL['learning_rate']:g} for a new model; with --init {KNOWN_STRUCTURE['learning_rate']:g} where the "
                       f"model already segments the cases (Dice >= {KNOWN_STRUCTURE_DICE:g}), else {NEW_STRUCTURE['learning_rate']:g})")
    train.add_argument("--validation-fraction", type=_fraction,
                       help="share of each labelled dataset held out and scored (default: 0.2)")
    train.add_argument("--config", help="research recipe: a JSON object of training settings (the fields of "
                       "mecca.recipe.TrainingConfig, and \"network\": those of mecca.networks.NetworkConfig; "
                       "research/recipes/ holds the project's); options given here take precedence")
    add_device_option(train)
    train.add_argument("--seed", type=int, help="seed of every random draw of the run (default: 0)")
    train.add_argument("--restart", action="store_true", help="ignore a saved state and start over")
    train.add_argument("--skip-bad", action="store_true",
                       help="train on the usable cases when some are bad (they are reported either way)")
    train.add_argument("--save-every-s", type=float, default=300.0,
                       help="seconds between training-state saves within an epoch (default 300; also saved "
                            "at each epoch's end); a killed run resumes from the last one")
    train.add_argument("--progress", choices=["bar", "jsonl"], default="bar",
                       help="jsonl: one JSON object per line on stdout (see mecca.progress) for other programs")

    evaluate = sub.add_parser("evaluate", help="MECCA model files under the same seeded simulated user on a dataset "
                              "(research/compare.py adds the baselines)")
    evaluate.add_argument("--model", action="append", help="MECCA model file (repeat to compare several; default: bundled)")
    add_evaluation_options(evaluate)

    bench = sub.add_parser("bench", help="round latency and memory per ROI size; memory on a big volume (research/bench.py adds the peers)")
    bench.add_argument("--json", required=True, help="results file")
    add_device_option(bench)
    bench.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    bench.add_argument("--roi", default="64,96,128", help="comma-separated edge lengths of the cubic ROIs timed, in "
                       "voxels (default: 64,96,128)")
    bench.add_argument("--repeats", type=_whole_steps, default=5, help="timed rounds per ROI (default: 5)")
    bench.add_argument("--steps-per-round", type=_steps_per_round, default=AUTO_STEPS, help=STEPS_HELP)
    bench.add_argument("--flip-average", action="store_true", help=FLIP_HELP)
    bench.add_argument("--model", help="model file; default: the bundled model")
    bench.add_argument("--image", help="scan to resample to each ROI (default: the bundled sample)")
    bench.add_argument("--label", help="its label (for the simulated clicks)")
    bench.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's choice)")
    bench.add_argument("--no-big-volume", action="store_true", help="skip the 512 x 512 x 300 session")

    info = sub.add_parser("info", help="print a model file's architecture, training record and metrics")
    info.add_argument("--model", help="model file; default: the bundled model")
    info.add_argument("--card", action="store_true", help="print a Markdown model card")
    info.add_argument("--json", action="store_true", help="print the file's whole record as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(Path(args.out), args.model, args.rounds, args.clicks_per_round, args.seed, args.device,
                     args.precision)
        elif args.command == "segment":
            run_segment(args.image, args.clicks, Path(args.out), args.model, args.rounds, args.device, args.label,
                        args.precision, args.steps_per_round, args.flip_average, args.lean_correction, args.start)
        elif args.command == "train":
            run_train(args)
        elif args.command == "evaluate":
            run_evaluate(args)
        elif args.command == "bench":
            run_bench(args)
        elif args.command == "info":
            run_info(args.model, args.card, args.json)
    except (InputError, CheckpointError, SessionError, FileNotFoundError) as error:
        print(f"mecca {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mecca {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
