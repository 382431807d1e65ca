"""The speed comparison and the levers: the classical tools (Grow from seeds, the random walker) on
the cubes and clicks ``mecca bench`` times MECCA on, and each of the engine's optimisations
switched off alone (or an alternative design switched on).

    python -m research.bench --json bench.json [--roi 64,96,128] [--levers]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from mecca.bench import bench_roi, cube_case, median_seconds, timing_stats
from mecca.checkpoint import load_model
from mecca.datasets import binary_label
from mecca.io import read_volume, write_json
from mecca.networks import MeccaModel
from mecca.provenance import machine_description
from mecca.resources import DEFAULT_MODEL, SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
from mecca.users import SimulatedUser
from mecca.volume import Volume

from .baselines.seeded_tools import GrowFromSeedsMethod, RandomWalkerMethod


def time_peers(image: Volume, label: np.ndarray, size: int, repeats: int) -> dict:
    """Seconds per round of Grow from seeds and the random walker on the cube of ``size`` with the
    first round's three simulated clicks (those ``mecca bench`` gives MECCA)."""
    volume, cube_label = cube_case(image, label, size)
    box = ((0, 0, 0), (size, size, size))
    clicks = SimulatedUser(cube_label, seed=0).clicks(np.zeros_like(cube_label, bool), 3, 0)
    result = {}
    try:
        grow = GrowFromSeedsMethod()
    except RuntimeError as error:  # slicer-core is an optional dependency: say why there is no figure
        grow, result["grow_from_seeds_not_timed"] = None, str(error)
    for name, method in (("grow_from_seeds_round_s", grow), ("random_walker_round_s", RandomWalkerMethod())):
        if method is None:
            result[name] = None
            continue
        method.start(volume, box)
        times = []
        for _ in range(min(repeats, 3) + 1):
            start = time.perf_counter()
            method.refine(clicks)
            times.append(time.perf_counter() - start)
        result[name] = timing_stats(times[1:])
    return result


def _networks_seconds(model: MeccaModel, size: int, repeats: int, memory_format=torch.channels_last_3d,
                      with_value: bool = False) -> float:
    """Median time of one round's network work: policy forward, argmax, confidence forward (for
    the split architecture its heads on the image's features, computed once per ROI)."""
    state = torch.randn(1, 3, size, size, size).to(model.dtype).contiguous(memory_format=memory_format)
    with torch.no_grad():
        features = model.image_features(state[:, 0])

    def once():
        with torch.no_grad():
            logits, _ = model.policy_outputs(state, features, with_value=with_value)
            action = logits.argmax(dim=1)
            model.confidence_logits(state, (action.to(state.dtype) - 2.5) / 10, features)

    return median_seconds(once, repeats)


def _compiled_seconds(model: MeccaModel, size: int, repeats: int) -> tuple[str, float, str]:
    """The round's networks under torch.compile (Inductor), the compile time as a note."""
    eager = dict(model.networks)
    start = time.perf_counter()
    try:
        for name, net in eager.items():
            setattr(model, name, torch.compile(net))
        _networks_seconds(model, size, 1)
        compile_seconds = time.perf_counter() - start
        return "torch.compile (Inductor)", _networks_seconds(model, size, repeats), \
            f"compiling took {compile_seconds:.0f} s"
    except Exception as error:  # noqa: BLE001 - a backend that cannot compile here is a result, not a crash
        return "torch.compile (Inductor)", float("nan"), f"failed: {type(error).__name__}"
    finally:
        for name, net in eager.items():
            setattr(model, name, net)
        torch.compiler.reset()  # drop the compiled graphs and their guards


def bench_levers(model: MeccaModel, image: Volume, size: int, repeats: int) -> list[dict]:
    """Each optimisation switched off (or an alternative design switched on) alone, on one ROI size.

    Architecture variants (stride, width) are timed with untrained weights: their speed does not
    depend on the weights; what they cost in Dice needs a training run each (docs/performance.md).
    """
    from mecca.advice import rank_regions, segments_for_round, supervoxels
    from mecca.environment import normalize_image

    rows = []

    def row(name: str, seconds: float, note: str = ""):
        rows.append({"lever": name, "seconds": round(seconds, 4), "note": note})

    native = model.dtype
    row("default: channels-last, " + str(native).removeprefix("torch."), _networks_seconds(model, size, repeats))
    model.prepare_for_inference("float32")
    row("float32, channels-last", _networks_seconds(model, size, repeats))
    for net in model.networks.values():
        net.to(memory_format=torch.contiguous_format)
    row("float32, NCDHW (no channels-last)", _networks_seconds(model, size, repeats, torch.contiguous_format))
    model.prepare_for_inference("bfloat16" if native == torch.bfloat16 else "float32")
    row("value head computed too (as in training)", _networks_seconds(model, size, repeats, with_value=True))
    row(*_compiled_seconds(model, size, repeats))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    row("1 thread", _networks_seconds(model, size, repeats))
    torch.set_num_threads(threads)
    own = model.config
    for name, config in (("stride 1 (full-resolution trunk)", replace(own, stride=1)),
                         ("width 8", replace(own, width=8, confidence_width=8)),
                         ("width 24", replace(own, width=24, confidence_width=24)),
                         ("fusion layer of 8 channels (models before fusion_width)", replace(own, fusion_width=8))):
        variant = MeccaModel.create(config).prepare_for_inference(str(native).removeprefix("torch."))
        row(name, _networks_seconds(variant, size, repeats), "untrained: speed only")
    volume, _ = cube_case(image, np.zeros(image.shape, np.uint8), size)
    image_norm = normalize_image(volume.array)
    confidence = np.random.default_rng(0).random(image_norm.shape).astype(np.float32)
    start = time.perf_counter()
    regions = supervoxels(image_norm, segments_for_round(1), volume.spacing_kji)
    slic_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rank_regions(regions, confidence)
    row("advice: SLIC every round instead of cached per ROI", slic_seconds + time.perf_counter() - start,
        "added to a round")
    return rows


def _cell(value: float | None, width: int, form: str) -> str:
    """A table cell: the number, or n/a where it was not measured (the reason is printed below)."""
    return format(value, f">{width}{form}") if value is not None else f"{'n/a':>{width}}"


def format_table(result: dict) -> str:
    lines = [f"{'ROI':>5} {'MECCA round s':>14} {'grow-from-seeds s':>18} {'x':>5} {'random walker s':>16} {'x':>5}"]
    for size, r in result["rois"].items():
        mecca = r["mecca_round_s"]["median"]
        grow, walker = r.get("grow_from_seeds_round_s"), r.get("random_walker_round_s")
        lines.append(f"{size:>5} {mecca:>14.3f} {_cell(grow and grow['median'], 18, '.3f')} "
                     f"{_cell(grow and grow['median'] / mecca, 5, '.1f')} {_cell(walker and walker['median'], 16, '.3f')} "
                     f"{_cell(walker and walker['median'] / mecca, 5, '.1f')}")
        if r.get("grow_from_seeds_not_timed"):
            lines.append(f"      grow-from-seeds not timed: {r['grow_from_seeds_not_timed']}")
    if "levers" in result:
        lines.append(f"network time of one round at {result['levers']['roi']}^3, one lever changed at a time:")
        lines += [f"  {row['lever']:<48s} {row['seconds']:.3f} s {row['note']}" for row in result["levers"]["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="results file")
    parser.add_argument("--roi", default="64,96,128", help="cube edge lengths in voxels (default: 64,96,128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per ROI (default: 5)")
    parser.add_argument("--model", help="MECCA model (default: bundled)")
    parser.add_argument("--levers", action="store_true", help="also time each optimisation switched off, at the largest ROI")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.roi.split(",")]
    model = load_model(args.model or resource_path(*DEFAULT_MODEL), precision="auto")
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = binary_label(read_volume(resource_path(*SAMPLE_LABEL)).array)
    result = {"machine": machine_description("cpu"), "precision": str(model.dtype).removeprefix("torch."), "rois": {}}
    for size in sizes:
        result["rois"][str(size)] = {"mecca_round_s": bench_roi(model, image, label, size, args.repeats)["mecca_round_s"],
                                     **time_peers(image, label, size, args.repeats)}
    if args.levers:
        result["levers"] = {"roi": max(sizes), "rows": bench_levers(model, image, max(sizes), args.repeats)}
    write_json(result, args.json)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
