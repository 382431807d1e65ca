"""``mecca bench``: what a round costs on this machine, and how close the policy runs to the
machine's conv3d peak.

All figures come from one run on the same inputs: a real scan (the bundled sample unless another
is given) resampled to each ROI size, the same simulated clicks every time. The big-volume
figures (open time, peak memory) come from a separate process so that nothing else in this one
inflates them. research/bench.py times the classical tools on the same cubes and clicks, and the
levers (each optimisation switched off).
"""

from __future__ import annotations

import multiprocessing
import resource
import time

import numpy as np
import torch
from scipy import ndimage

from . import cpu_kernels
from .cpu_kernels import Conv3d
from .defaults import AUTO_STEPS
from .geometry import ijk_from_kji
from .networks import MeccaModel
from .session import InteractiveSession
from .users import SimulatedUser
from .volume import Volume

BIG_VOLUME = (300, 512, 512)  # k, j, i: a typical CT


def cube_case(image: Volume, label: np.ndarray, size: int) -> tuple[Volume, np.ndarray]:
    """The scan scaled so its longest side is ``size``, edge-padded to a size^3 cube."""
    factor = size / max(image.shape)
    array = ndimage.zoom(image.array.astype(np.float32), factor, order=1)
    mask = ndimage.zoom(label.astype(np.uint8), factor, order=0)
    pad = [(0, size - s) for s in array.shape]
    cube = np.pad(array, pad, mode="edge")[:size, :size, :size]
    cube_label = np.pad(mask, pad)[:size, :size, :size]
    spacing = tuple(s / factor for s in image.spacing)
    return Volume(cube, spacing, image.origin, image.direction, image.name), cube_label


def timing_stats(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 4), "p90": round(float(np.percentile(values, 90)), 4),
            "n": len(values)}


def three_figures(value: float) -> float:
    """A rate to three significant figures: a slow spell can drop GFLOP/s below 1, where one decimal
    would lose the figure the fractions of peak are computed from."""
    return float(f"{value:.3g}")


def conv_calls(net: torch.nn.Module, *inputs) -> list[tuple[torch.nn.Conv3d, torch.Size, int]]:
    """Every 3D convolution one forward pass makes: (layer, input shape, FLOPs = multiply-adds x 2)."""
    calls = []

    def record(module, args, output):
        kernel = int(np.prod(module.kernel_size))
        calls.append((module, args[0].shape, 2 * output.numel() * (module.in_channels // module.groups) * kernel))

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def _synchronized(function, device: torch.device):
    """``function`` followed by a wait for the GPU's queued work: a timing of a GPU call without it
    measures only the launch."""
    if device.type != "cuda":
        return function
    return lambda: (function(), torch.cuda.synchronize(device))[0]


def median_seconds(function, repeats: int) -> float:
    """Median wall time of ``function`` over ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def policy_step(model: MeccaModel, state: torch.Tensor) -> tuple[torch.nn.Module, tuple]:
    """The policy's forward pass of one step as (network, its inputs): for the split architecture
    the light head on the image's features, which a session computes once per ROI, not per step."""
    if model.encoder is None:
        return model.policy, (state, False)
    with torch.no_grad():
        features = model.image_features(state[:, 0])
    return model.policy, (state, features, False)


def useful_flops(net: torch.nn.Module, inputs: tuple) -> int:
    """FLOPs of the policy's forward pass as the whole-volume path computes it: the slabbed fusion
    head also convolves each slab's halo rows, work the result does not need, which must not count
    as achieved."""
    slab_voxels = cpu_kernels.SLAB_VOXELS
    cpu_kernels.SLAB_VOXELS = inputs[0].shape[2:].numel()  # the whole volume is one slab
    try:
        return sum(layer_flops for *_, layer_flops in conv_calls(net, *inputs))
    finally:
        cpu_kernels.SLAB_VOXELS = slab_voxels


def interleaved_best_seconds(functions, repeats: int) -> list[float]:
    """Best wall time of each function over ``repeats`` calls, the functions taking turns, so that a
    slow spell of a shared machine hits every function alike instead of one of them (the ratio of
    the policy's speed to the conv3d peak moved by 10 points from run to run when they were timed
    one after the other). Each timed call follows an untimed call of the same function, so that its
    data is in the cache as in a run of calls (and oneDNN has built its kernels for the shape)."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            function()
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def _standalone(layer: torch.nn.Conv3d, shape, dtype: torch.dtype, device: torch.device):
    """A call of a fresh copy of ``layer`` on random input of ``shape``: the convolution alone,
    without the network's other work (activations, upsampling, concatenation)."""
    conv = Conv3d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                  dilation=layer.dilation, groups=layer.groups)
    conv = conv.to(device=device, dtype=dtype, memory_format=torch.channels_last_3d).eval()
    x = torch.randn(*shape, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last_3d)
    return lambda: conv(x)


def conv3d_peak_layers(calls, dtype: torch.dtype, device: torch.device):
    """The practical limit, as a pure conv3d microbenchmark of the same layer shapes: each of a
    forward pass's convolutions (``conv_calls``; slabs of the fusion head included) alone on its own
    input shape. Returns a call that runs them all once; their FLOPs are the forward pass's."""
    layers = [_standalone(layer, shape, dtype, device) for layer, shape, _ in calls]
    return lambda: [layer() for layer in layers]


def conv3d_best_layer(width: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device):
    """A stricter limit: the policy's most efficient layer shape (width -> width, 3x3x3, on the
    half-resolution grid) alone. Returns a call of the layer and its FLOPs."""
    conv = torch.nn.Conv3d(width, width, 3, padding=2, dilation=2)
    return _standalone(conv, (1, width, *shape), dtype, device), 2 * 27 * width * width * int(np.prod(shape))


def bench_roi(model: MeccaModel, image: Volume, label: np.ndarray, size: int, repeats: int, rounds: int = 3,
              steps_per_round: int | str = AUTO_STEPS, flip_average: bool = False) -> dict:
    volume, cube_label = cube_case(image, label, size)
    box = ((0, 0, 0), (size, size, size))
    user = SimulatedUser(cube_label, seed=0)
    result: dict = {"roi": [size] * 3}

    round_times, parts, open_times = [], {}, []
    for repeat in range(repeats + 1):  # the first pass warms up and is not counted
        start = time.perf_counter()
        session = InteractiveSession(volume, model, roi=box, steps_per_round=steps_per_round, flip_average=flip_average)
        session.precompute_advice()  # supervoxels are cached per image (ROI), before the first click
        opened = time.perf_counter() - start
        for round_index in range(rounds):
            for click in user.clicks(session.mask > 0, 3, round_index):
                session.add_click(ijk_from_kji(click.position), click.positive)
            start = time.perf_counter()
            session.step()
            session.advice_regions  # noqa: B018 - the ranking is part of a round the user sees
            elapsed = time.perf_counter() - start
            if repeat:
                round_times.append(elapsed)
                for key, value in session.last_round.timings.items():
                    parts.setdefault(key, []).append(value)
        if repeat:
            open_times.append(opened)
    result["policy_steps"] = session.last_round.steps
    result["mecca_round_s"] = timing_stats(round_times)
    result["parts_s"] = {k.removesuffix("_s"): round(float(np.median(v)), 4) for k, v in parts.items()}
    result["advice_precompute_s"] = timing_stats(open_times)

    device = model.device  # the state on the model's device: a CPU tensor into GPU weights fails
    state = torch.zeros(1, 3, size, size, size, dtype=model.dtype, device=device)
    state = state.contiguous(memory_format=torch.channels_last_3d)
    net, inputs = policy_step(model, state)
    flops = useful_flops(net, inputs)
    calls = conv_calls(net, *inputs)
    half = tuple(-(-size // model.config.stride) for _ in range(3))
    best_layer, best_layer_flops = conv3d_best_layer(model.config.width, half, model.dtype, device)
    with torch.no_grad():
        policy_seconds, layers_seconds, best_layer_seconds = interleaved_best_seconds(
            [_synchronized(function, device) for function in (lambda: net(*inputs),
                                                              conv3d_peak_layers(calls, model.dtype, device), best_layer)],
            repeats)
    achieved = flops / policy_seconds / 1e9
    result["policy_gflop"] = round(flops / 1e9, 3)
    result["policy_gflops_achieved"] = three_figures(achieved)
    peak = sum(layer_flops for *_, layer_flops in calls) / layers_seconds / 1e9
    result["conv3d_peak_gflops"] = three_figures(peak)
    result["policy_fraction_of_peak"] = round(achieved / peak, 3)
    result["conv3d_best_layer_gflops"] = three_figures(best_layer_flops / best_layer_seconds / 1e9)
    result["policy_fraction_of_best_layer"] = round(achieved / (best_layer_flops / best_layer_seconds / 1e9), 3)

    return result


def _big_volume_child(model_path, precision, queue) -> None:
    """Open a session on a 512 x 512 x 300 CT-like volume, click, run a round (own process)."""
    from .checkpoint import load_model

    torch.set_num_threads(queue.get())
    model = load_model(model_path, precision=precision) if model_path else MeccaModel.create()
    shape = BIG_VOLUME
    array = np.full(shape, -1000, np.int16)  # air
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    array[((k - 150) / 40.0) ** 2 + ((j - 256) / 60.0) ** 2 + ((i - 256) / 60.0) ** 2 <= 1] = 60  # soft tissue
    image = Volume(array, spacing=(0.7, 0.7, 1.5))
    start = time.perf_counter()
    session = InteractiveSession(image, model)
    opened = time.perf_counter() - start
    session.add_click((256, 256, 150), True)
    start = time.perf_counter()
    summary = session.step()
    first_round = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"volume": list(ijk_from_kji(shape)), "session_open_s": round(opened, 4), "first_round_s": round(first_round, 4),
               "auto_roi": [summary["roi_lo_ijk"], summary["roi_hi_ijk"]], "peak_rss_mb": round(peak_kb / 1024, 1)})


def bench_big_volume(model_path: str | None, precision: str, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    queue.put(threads)
    process = context.Process(target=_big_volume_child, args=(model_path, precision, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the big-volume benchmark process failed (exit code {process.exitcode})")
    return queue.get()
