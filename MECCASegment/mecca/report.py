"""Figures and cards: the per-round montage (image + contours, confidence, numbered advice regions), the
evaluation figure (Dice per round per method, one case), the Markdown model card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import colours  # noqa: E402
from .clicks import Click  # noqa: E402
from .colours import hex_code  # noqa: E402
from .geometry import slice_orientation  # noqa: E402
from .io import atomic_path  # noqa: E402
from .session import InteractiveSession  # noqa: E402
from .volume import Volume  # noqa: E402


def _save(figure, path: str | Path, metadata: dict | None = None) -> Path:
    """Save a figure atomically: a failed save leaves the previous figure in place. ``metadata``:
    PNG text fields (a picture's own figures, which a test compares with the caption quoting them)."""
    path = Path(path)
    try:
        with atomic_path(path, ".png") as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata=metadata)
    finally:
        plt.close(figure)
    return path


SHOWN_SLICES = 2  # clicks within this many slices of the one shown are drawn on it
SMALLEST_HOLE_SHOWN = 4  # pixels: smaller holes in an outline would read as markers


@dataclass
class RoundSnapshot:
    """One slice of a round's result (2D arrays, so long sessions stay light)."""

    round_index: int
    slice_k: int
    mask: np.ndarray
    confidence: np.ndarray
    advice: np.ndarray  # advice ranks (1-5) on this slice, 0 elsewhere
    advice_ranks: list[int]  # every rank the round suggested (some may lie on other slices)
    clicks: list[Click]
    dice: float | None = None
    advice_doubtful_ml: list[float] = field(default_factory=list)  # by rank: the expected volume of wrong actions


@dataclass
class SliceView:
    """Where the montage's slice lies and how it is drawn: its plane and number, the patient side at
    each edge, and its pixels' size in mm (rows, columns) so that the picture keeps the scan's proportions."""

    plane: str
    slice_k: int
    edges: dict[str, str]
    pixel_mm: tuple[float, float]

    @classmethod
    def of(cls, image: Volume, slice_k: int) -> SliceView:
        plane, edges = slice_orientation(image.direction)
        return cls(plane, slice_k, edges, image.spacing_kji[1:])


def snapshot(session: InteractiveSession, slice_k: int, new_clicks: list[Click], dice: float | None) -> RoundSnapshot:
    voxel_ml = float(np.prod(session.image.spacing)) / 1000
    regions = session.advice_regions
    return RoundSnapshot(session.rounds, slice_k, session.mask[slice_k].copy(), session.confidence_map()[slice_k].copy(),
                         session.advice_map()[slice_k].copy(), [r.rank for r in regions], list(new_clicks), dice,
                         [r.doubtful_voxels * voxel_ml for r in regions])


def _outline(axis, mask: np.ndarray, rgb: tuple, dashed: bool = False) -> None:
    """The outline of a 2D mask, its holes of a few pixels filled (they would read as markers)."""
    from scipy import ndimage

    holes, count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if count:
        small = np.flatnonzero(np.bincount(holes.ravel())[1:] < SMALLEST_HOLE_SHOWN) + 1
        mask = mask | np.isin(holes, small)
    if mask.any() and not mask.all():
        axis.contour(mask.astype(float), levels=[0.5], colors=[hex_code(rgb)], linewidths=1.3,
                     linestyles="dashed" if dashed else "solid")


def _label_positions(advice: np.ndarray, min_distance: float = 4.5) -> dict[int, tuple[float, float]]:
    """Where to write each rank shown: inside its region on the slice (the region's voxel nearest its
    centroid), moved along the region when another label is closer than ``min_distance`` pixels."""
    placed: dict[int, tuple[float, float]] = {}
    for rank in sorted(r for r in np.unique(advice) if r):
        points = np.argwhere(advice == rank).astype(float)
        order = np.argsort(((points - points.mean(0)) ** 2).sum(1))
        for point in points[order]:
            if all(np.hypot(*(point - np.array(other))) >= min_distance for other in placed.values()):
                placed[rank] = (float(point[0]), float(point[1]))
                break
        else:
            placed[rank] = tuple(points[order[0]])
    return placed


def doubt_colour_map():
    """The confidence overlay's colours (mecca.colours.doubt_ramp), transparent at and above CONFIDENT."""
    return matplotlib.colors.ListedColormap(colours.doubt_ramp(), name="doubt").with_extremes(over=(0, 0, 0, 0))


def _orient(axis, view: SliceView, with_scale: bool) -> None:
    """Patient sides at the panel's edges and, on the first panel, a scale bar in mm."""
    for edge, (x, y, ha, va) in {"top": (0.5, 0.99, "center", "top"), "bottom": (0.5, 0.01, "center", "bottom"),
                                 "left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center")}.items():
        axis.text(x, y, view.edges[edge], transform=axis.transAxes, ha=ha, va=va, color="white", fontsize=7,
                  weight="bold", bbox={"boxstyle": "square,pad=0.1", "fc": "black", "ec": "none", "alpha": 0.5})
    if with_scale:
        from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

        width_mm = (axis.get_xlim()[1] - axis.get_xlim()[0]) * view.pixel_mm[1]
        length_mm = 10 if width_mm >= 25 else 5
        axis.add_artist(AnchoredSizeBar(axis.transData, length_mm / view.pixel_mm[1], f"{length_mm} mm", "lower left",
                                        pad=0.6, color="white", frameon=False, size_vertical=0.4, fontproperties={"size": 7}))


def write_montage(path: str | Path, image_slice: np.ndarray, snapshots: list[RoundSnapshot], view: SliceView,
                  label_slice: np.ndarray | None = None, crop=None, title: str = "") -> Path:
    """Rows = rounds; columns = the segment with the round's clicks, where the model doubts the
    round's changes, the five "click here next" regions on this slice. ``crop`` = (rows, cols) slices.
    Colours as everywhere (mecca.colours); every panel says what it shows, so the figure reads without
    the README; the scan's proportions, its patient sides and a mm scale are kept."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    crop = crop or (slice(None), slice(None))
    image = image_slice[crop]
    low, high = np.percentile(image, (1, 99))
    aspect = view.pixel_mm[0] / view.pixel_mm[1]
    rows = len(snapshots)
    figure, axes = plt.subplots(rows, 3, figsize=(8.2, 2.9 * rows + 1.6), squeeze=False, layout="constrained")
    offset = np.array([crop[0].start or 0, crop[1].start or 0])
    for row, snap in zip(axes, snapshots):
        for number, axis in enumerate(row):
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest", aspect=aspect)
            axis.set_xticks([]), axis.set_yticks([])
            _orient(axis, view, with_scale=number == 0 and snap is snapshots[0])
        if label_slice is not None:
            _outline(row[0], label_slice[crop] > 0, colours.REFERENCE, dashed=True)
        _outline(row[0], snap.mask[crop] > 0, colours.SEGMENT)
        shown = 0
        for click in snap.clicks:
            k, j, i = click.position
            if abs(k - snap.slice_k) > SHOWN_SLICES:
                continue  # clicks on far slices would mislead on this one
            shown += 1
            r, c = np.array([j, i]) - offset
            row[0].plot(c, r, marker="P" if click.positive else "X", linestyle="none", markersize=8, markeredgecolor="black",
                        color=hex_code(colours.POSITIVE_CLICK if click.positive else colours.NEGATIVE_CLICK))
        positive = sum(c.positive for c in snap.clicks)
        dice = f", Dice {snap.dice:.3f}" if snap.dice is not None else ""
        row[0].set_title(f"Round {snap.round_index}{dice}\n{positive} + and {len(snap.clicks) - positive} - clicks, "
                         f"{shown} on or near this slice", fontsize=8)
        doubt = row[1].imshow(snap.confidence[crop], cmap=doubt_colour_map(), vmin=0, vmax=colours.CONFIDENT, alpha=0.7,
                              interpolation="nearest", aspect=aspect)
        _outline(row[1], snap.mask[crop] > 0, colours.SEGMENT)
        row[1].set_title("Where the model doubts\nthis round's changes", fontsize=8)
        advice = snap.advice[crop]
        shown_ranks = advice > 0
        if shown_ranks.any():
            row[2].imshow(np.ma.masked_where(~shown_ranks, np.ones(advice.shape)), alpha=0.25, interpolation="nearest",
                          cmap=matplotlib.colors.ListedColormap([hex_code(colours.ADVICE)]), aspect=aspect)
            for rank in np.unique(advice[shown_ranks]):
                _outline(row[2], advice == rank, colours.ADVICE)
        _outline(row[2], snap.mask[crop] > 0, colours.SEGMENT)
        for rank, (r, c) in _label_positions(advice).items():
            row[2].text(c, r, str(rank), color="black", fontsize=9, ha="center", va="center", weight="bold",
                        bbox={"boxstyle": "circle,pad=0.12", "fc": hex_code(colours.ADVICE), "ec": "black"})
        elsewhere = sorted(set(snap.advice_ranks) - set(np.unique(advice)))
        note = (f"\n(number {elsewhere[0]} lies on another slice)" if len(elsewhere) == 1 else
                f"\n(numbers {', '.join(map(str, elsewhere))} lie on other slices)" if elsewhere else "\n")
        row[2].set_title("Click here next: where it doubts most,\n1 = most" + note, fontsize=8)
        if snap.advice_doubtful_ml:
            row[2].set_xlabel("likely wrong, mL: " + "  ".join(f"{rank}: {ml:.2f}" for rank, ml in
                                                                zip(snap.advice_ranks, snap.advice_doubtful_ml)), fontsize=7)
    bar = figure.colorbar(doubt, ax=axes[-1, 1], location="bottom", shrink=0.95, pad=0.02)
    bar.set_label(f"confidence in the change (clear: {colours.CONFIDENT} and above)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=hex_code(colours.SEGMENT), label="MECCA segment"),
               *([Line2D([], [], color=hex_code(colours.REFERENCE), linestyle="dashed",
                         label="expert label (Dice is against it)")] if label_slice is not None else []),
               Line2D([], [], marker="P", color=hex_code(colours.POSITIVE_CLICK), markeredgecolor="black", linestyle="none",
                      label="+ click (grow)"),
               Line2D([], [], marker="X", color=hex_code(colours.NEGATIVE_CLICK), markeredgecolor="black", linestyle="none",
                      label="- click (shrink)"),
               Patch(facecolor=hex_code(colours.DOUBTFUL), alpha=0.7, label="doubtful change"),
               Patch(facecolor=hex_code(colours.ADVICE), edgecolor="black", alpha=0.6, label="click-here-next region")]
    figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    where = f"{view.plane} slice {view.slice_k + 1} of the scan (k = {view.slice_k}), patient sides at the edges"
    figure.suptitle(f"{title}\n{where}" if title else where, fontsize=10)
    return _save(figure, path, {"Description": title})


# MECCA in its segment's yellow, darkened to read on white
METHOD_COLOURS = {"mecca": "#c89b00", "iter-mrl": "tab:orange", "intercnn": "tab:blue", "deepigeos": "tab:cyan",
                  "p-net": "tab:gray", "u-net": "tab:brown", "grow-from-seeds": "tab:green", "random-walker": "tab:purple"}


def write_evaluation_figure(path: str | Path, summary: dict, figure_case: dict | None, title: str = "") -> Path:
    """Left: mean Dice per round per method (+/- sd), as the paper's Figure 6 left. Right: one case,
    the expert label (cyan, dashed) against each method's last contour (yellow), as Figure 6 right."""
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
    curve.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole: no tick at round 1.5
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
            _outline(axis, label[slice_k][crop], colours.REFERENCE, dashed=True)
            _outline(axis, mask[slice_k][crop] > 0, colours.SEGMENT)
            axis.set_title(name, fontsize=8)
            axis.set_xticks([]), axis.set_yticks([])
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=hex_code(colours.REFERENCE), linestyle="dashed", label="expert label"),
                   Line2D([], [], color=hex_code(colours.SEGMENT), label="method after the last round")]
        figure.legend(handles=handles, loc="lower right", ncol=2, fontsize=7, frameon=False,
                      title=f"case {figure_case['case']}, slice {slice_k}", title_fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def evaluated_structure(evaluation: dict) -> str:
    """An evaluation's dataset, with the label values it scored when they were chosen (one organ of
    a label map of several)."""
    labels = evaluation.get("labels")
    return f"{evaluation['dataset']} (label {labels})" if labels else evaluation["dataset"]


def model_card(path: str | Path, metadata: dict, network: dict) -> str:
    """A Markdown model card from a model file's own record (what it was trained on, how, how long,
    and what it measured), so a fine-tuned model documents itself like the bundled one."""
    training = metadata.get("training", {})
    config = training.get("config", {})
    data = training.get("data", {})
    lines = [f"# Model card: `{Path(path).name}`", ""]
    kind = ("MECCA policy + action-confidence network" if config.get("confidence_reward", True)
            else "BS-IRIS baseline (boundary-aware reward, supervoxel clicks; research/baselines/bs_iris.py)"
            if config.get("boundary_reward") else "IteR-MRL ablation (MECCA without confidence-shaped reward)")
    lines += [f"- Kind: {kind}", f"- Architecture: {json.dumps(network)}",
              f"- Command: `{training.get('command', '?')}`",
              f"- Machine: {training.get('machine', '?')}, device {training.get('device', '?')}, "
              f"{training.get('processes', 1)} process(es)",
              f"- Wall time{' of the last stage' if metadata.get('lineage') else ''}: "
              f"{training.get('wall_time_s', 0) / 3600:.2f} h over {config.get('epochs', '?')} epochs",
              f"- Training settings: {json.dumps(config)}"]
    if metadata.get("weight_average_of"):
        lines.append(f"- Weights: the mean of the weights of {', '.join(f'`{p}`' for p in metadata['weight_average_of'])}; "
                     "the training record above is the first one's")
    lines.append("")
    lines += ["## Data", "", "| dataset | cases | validation (held out) | labelled training | unlabelled training |",
              "|---|---|---|---|---|"]
    for d in data.get("datasets", []):
        lines.append(f"| {d['name']} (`{d['path']}`) | {d['cases']} | {len(d['validation'])} | {d['labeled_train']} "
                     f"| {d['unlabeled_train']} |")
    lineage = metadata.get("lineage", [])
    if data.get("init"):
        lines.append(f"\nFine-tuned from {'the model of ' + data['init'] + ' (below)' if lineage else '`' + data['init'] + '`'}.")
    metrics = metadata.get("metrics", {})
    evaluations = metrics.get("evaluations", [])
    if evaluations:
        lines += ["", "## Evaluated (held-out cases, `mecca evaluate`)", "",
                  "| dataset | simulated user | cases | clicks per round | Dice round 1 | 2 | 3 | 4 | 5 | command |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for e in evaluations:
            means = " | ".join(f"{v:.3f}" for v in e["dice_mean_per_round"])
            lines.append(f"| {evaluated_structure(e)} | {e['user']} | {e['cases']} ({e['split']}) | {e['clicks_per_round']} | "
                         f"{means} | `{e['command']}` |")
    if metrics.get("validation"):
        lines += ["", "## Validation at the end of training", "", f"Protocol: {metrics.get('protocol', '?')}.", "",
                  "| dataset | cases | Dice round 1 | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|---|---|"]
        for name, m in metrics["validation"].items():
            means = " | ".join(f"{v:.3f}" for v in m["dice_mean_per_round"])
            lines.append(f"| {name} | {m['cases']} | {means} |")
    else:
        lines += ["", "No validation at the end of training (the run held no cases back, or validated elsewhere)."]
    if lineage:
        hours = sum(stage.get("wall_time_s") or 0 for stage in lineage) + training.get("wall_time_s", 0)
        lines += ["", f"## How this model was made ({len(lineage) + 1} stages, {hours / 3600:.2f} h in all)", "",
                  "Each command as it was run, with the options and paths of its day (several options have since "
                  "moved into research recipes; `gpu/` and `runs/` were working folders, not shipped).", "",
                  "| stage | epochs | wall h | command | machine |", "|---|---|---|---|---|"]
        for number, stage in enumerate([*lineage, {"command": training.get("command"), "epochs": config.get("epochs"),
                                                   "wall_time_s": training.get("wall_time_s"),
                                                   "machine": training.get("machine")}], start=1):
            lines.append(f"| {number} | {stage.get('epochs', '?')} | {(stage.get('wall_time_s') or 0) / 3600:.2f} | "
                         f"`{stage.get('command') or '?'}` | {stage.get('machine') or '?'} |")
    history = training.get("history", [])
    if history and history[-1].get("validation"):
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
