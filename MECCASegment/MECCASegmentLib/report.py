"""Figures: the per-round montage (image + contours, confidence, numbered advice regions)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .hints import Click  # noqa: E402
from .io import atomic_path  # noqa: E402
from .session import InteractiveSession  # noqa: E402


def _save(figure, path: str | Path) -> Path:
    """Save a figure atomically: a failed save leaves the previous figure in place."""
    path = Path(path)
    try:
        with atomic_path(path, ".png") as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)
    return path


@dataclass
class RoundSnapshot:
    """One axial slice of a round's result (2D arrays, so long sessions stay light)."""

    round_index: int
    slice_k: int
    mask: np.ndarray
    confidence: np.ndarray
    advice_projection: np.ndarray  # advice ranks, maximum over all slices of the ROI
    advice_centres: list[tuple[int, float, float]]  # rank, row (j), column (i)
    clicks: list[Click]
    dice: float | None = None


def snapshot(session: InteractiveSession, slice_k: int, new_clicks: list[Click], dice: float | None) -> RoundSnapshot:
    advice = session.advice_map()
    centres = [(r.rank, float(r.centre[1]), float(r.centre[0])) for r in session.advice_regions]
    return RoundSnapshot(session.rounds, slice_k, session.mask[slice_k].copy(), session.confidence_map()[slice_k].copy(),
                         advice.max(axis=0), centres, list(new_clicks), dice)


def _contour(axis, mask: np.ndarray, color: str, label: str | None = None) -> None:
    if mask.any() and mask.min() != mask.max():
        axis.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.2)
        if label:
            axis.plot([], [], color=color, label=label)


def write_montage(path: str | Path, image_slice: np.ndarray, snapshots: list[RoundSnapshot],
                  label_slice: np.ndarray | None = None, crop=None, title: str = "") -> Path:
    """Rows = rounds; columns = segmentation, confidence, advice regions. ``crop`` = (rows, cols) slices."""
    crop = crop or (slice(None), slice(None))
    image = image_slice[crop]
    low, high = np.percentile(image, (1, 99))
    rows = len(snapshots)
    figure, axes = plt.subplots(rows, 3, figsize=(9.6, 3.1 * rows + 0.4), squeeze=False)
    for row, snap in zip(axes, snapshots):
        for axis in row:
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axis.set_xticks([]), axis.set_yticks([])
        head = f"round {snap.round_index}" + (f"  Dice {snap.dice:.3f}" if snap.dice is not None else "")
        if label_slice is not None:
            _contour(row[0], label_slice[crop], "lime", "reference")
        _contour(row[0], snap.mask[crop], "yellow", "MECCA")
        for click in snap.clicks:
            k, j, i = click.position
            if abs(k - snap.slice_k) > 2:
                continue  # clicks on far slices would mislead on this one
            r, c = j - (crop[0].start or 0), i - (crop[1].start or 0)
            row[0].plot(c, r, marker="P" if click.positive else "X", color="cyan" if click.positive else "red",
                        markersize=7, markeredgecolor="black", linestyle="none")
        row[0].set_title(head + f"  (+{sum(c.positive for c in snap.clicks)}/-"
                                f"{sum(not c.positive for c in snap.clicks)} clicks; shown if within 2 slices)",
                         fontsize=8)
        shown = row[1].imshow(snap.confidence[crop], cmap="RdYlGn", vmin=0, vmax=1, alpha=0.55,
                              interpolation="nearest")
        _contour(row[1], snap.mask[crop], "black")
        row[1].set_title("action confidence (red = doubtful)", fontsize=8)
        advice = snap.advice_projection[crop]
        row[2].imshow(np.ma.masked_equal(advice, 0), cmap="autumn", alpha=0.45, vmin=1, vmax=5,
                      interpolation="nearest")
        for rank in range(1, 6):
            _contour(row[2], advice == rank, "orange")
        for rank, r, c in snap.advice_centres:
            row[2].text(c - (crop[1].start or 0), r - (crop[0].start or 0), str(rank), color="white", fontsize=10,
                        ha="center", va="center", weight="bold",
                        bbox={"boxstyle": "circle,pad=0.15", "fc": "black", "alpha": 0.6})
        row[2].set_title("click here next (1 = least confident; projection)", fontsize=8)
    figure.colorbar(shown, ax=axes[:, 1].tolist(), fraction=0.04, pad=0.02)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


METHOD_COLOURS = {"mecca": "tab:red", "iter-mrl": "tab:orange", "click-cnn": "tab:blue",
                  "grow-from-seeds": "tab:green", "random-walker": "tab:purple"}


def write_evaluation_figure(path: str | Path, summary: dict, figure_case: dict | None, title: str = "") -> Path:
    """Left: mean Dice per round per method (+/- sd), as the paper's Figure 6 left. Right: one case,
    reference contour (green) against each method's round-5 contour (yellow), as Figure 6 right."""
    methods = [m for m in summary if summary[m].get("cases")]
    panels = len(figure_case["masks"]) if figure_case else 0
    figure = plt.figure(figsize=(5.5 + 2.4 * panels, 4.2))
    grid = figure.add_gridspec(1, 1 + panels, width_ratios=[2.2] + [1] * panels)
    curve = figure.add_subplot(grid[0, 0])
    for name in methods:
        mean = np.asarray(summary[name]["dice_mean_per_round"])
        sd = np.asarray(summary[name]["dice_sd_per_round"])
        rounds = np.arange(1, len(mean) + 1)
        colour = METHOD_COLOURS.get(name)
        curve.plot(rounds, mean, marker="o", label=f"{name} (n={summary[name]['cases']})", color=colour)
        curve.fill_between(rounds, mean - sd, mean + sd, alpha=0.12, color=colour)
    curve.set_xlabel("interaction round")
    curve.set_ylabel("Dice")
    curve.set_ylim(0, 1)
    curve.grid(alpha=0.3)
    curve.legend(fontsize=7, loc="lower right")
    curve.set_title("Dice per round (mean +/- sd)", fontsize=9)
    if figure_case:
        label = figure_case["label"] > 0
        slice_k = int(np.argmax(label.reshape(label.shape[0], -1).sum(axis=1)))
        points = np.argwhere(label[slice_k])
        lo = np.maximum(points.min(0) - 6, 0)
        hi = np.minimum(points.max(0) + 7, label.shape[1:])
        crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        image = figure_case["image"].array[slice_k][crop].astype(np.float32)
        low, high = np.percentile(image, (1, 99))
        for n, (name, mask) in enumerate(figure_case["masks"].items()):
            axis = figure.add_subplot(grid[0, 1 + n])
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            _contour(axis, label[slice_k][crop], "lime")
            _contour(axis, mask[slice_k][crop] > 0, "yellow")
            axis.set_title(name, fontsize=8)
            axis.set_xticks([]), axis.set_yticks([])
        figure.text(0.99, 0.01, f"case {figure_case['case']}, slice {slice_k}: reference (green) vs round-5 "
                                f"result (yellow)", ha="right", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def model_card(path: str | Path, metadata: dict, network: dict) -> str:
    """A Markdown model card from a model file's own record (what it was trained on, how, how long,
    and what it measured), so a fine-tuned model documents itself like the bundled one."""
    training = metadata.get("training", {})
    config = training.get("config", {})
    data = training.get("data", {})
    lines = [f"# Model card: `{Path(path).name}`", ""]
    kind = "click-CNN baseline (supervised)" if network.get("model") == "click-cnn" else (
        "MECCA policy + action-confidence network" if config.get("confidence_reward", True)
        else "IteR-MRL ablation (MECCA without confidence-shaped reward)")
    lines += [f"- Kind: {kind}", f"- Architecture: {json.dumps(network)}",
              f"- Command: `{training.get('command', '?')}`",
              f"- Machine: {training.get('machine', '?')}, device {training.get('device', '?')}, "
              f"{training.get('processes', 1)} process(es)",
              f"- Wall time: {training.get('wall_time_s', 0) / 3600:.2f} h over {config.get('epochs', '?')} epochs",
              f"- Training settings: {json.dumps(config)}", ""]
    lines += ["## Data", "", "| dataset | cases | validation (held out) | labelled training | unlabelled training |",
              "|---|---|---|---|---|"]
    for d in data.get("datasets", []):
        lines.append(f"| {d['name']} (`{d['path']}`) | {d['cases']} | {len(d['validation'])} | {d['labeled_train']} "
                     f"| {d['unlabeled_train']} |")
    if data.get("init"):
        lines.append(f"\nFine-tuned from `{data['init']}`.")
    metrics = metadata.get("metrics", {})
    lines += ["", "## Validation (held-out cases)", "", f"Protocol: {metrics.get('protocol', '?')}.", "",
              "| dataset | cases | Dice round 1 | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|---|---|"]
    for name, m in metrics.get("validation", {}).items():
        means = " | ".join(f"{v:.3f}" for v in m["dice_mean_per_round"])
        lines.append(f"| {name} | {m['cases']} | {means} |")
    history = training.get("history", [])
    if history:
        lines += ["", "## Training curve (validation subset per epoch, Dice after round 5)", "",
                  "| epoch | elapsed h | " + " | ".join(history[-1]["validation"]) + " |",
                  "|---|---|" + "---|" * len(history[-1]["validation"])]
        for entry in history:
            values = " | ".join(f"{m['dice_mean_per_round'][-1]:.3f}" for m in entry["validation"].values())
            lines.append(f"| {entry['epoch']} | {entry['elapsed_s'] / 3600:.2f} | {values} |")
    lines += ["", "## Intended use and limits", "",
              "Interactive segmentation of one structure per session in 3D CT/MRI, with a human checking every "
              "result. Trained on the data above only: other structures, modalities and voxel sizes work through "
              "the clicks but less well; not a diagnostic device."]
    return "\n".join(lines) + "\n"
