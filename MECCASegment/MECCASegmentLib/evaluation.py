"""Metrics, the interactive methods compared, and the simulated-user harness (paper section 5).

Every method sees the same thing: an ROI (the object's box plus a margin, as a user would draw
it) and, each round, the seeded simulated user's clicks computed from that method's own previous
mask. MECCA runs through the same InteractiveSession a clinician uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata

from .environment import build_state, misunderstanding_rate, normalize_image, simulated_labels
from .hints import Click, SimulatedUser, encode_hints
from .io import Case, InputError, Volume
from .networks import MeccaModel
from .seeded import RANDOM_WALKER_BETA, random_walker_probability, seed_map
from .session import AUTO_STEPS, LEAN_CORRECTION, Box, InteractiveSession, Round, _ijk, _slices
from .working_grid import working_grid

EVAL_ROI_MARGIN = 8  # voxels around the true object: the box a user would draw
RANDOM_WALKER_BETAS = (30.0, 130.0, 300.0, 1000.0, 3000.0)  # tried on training cases (tune_random_walker_beta)


# -- metrics -------------------------------------------------------------------------------------
def dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, ref = prediction > 0, label > 0
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 1.0 if total == 0 else float(2.0 * np.count_nonzero(pred & ref) / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def assd(prediction: np.ndarray, label: np.ndarray, spacing_kji=(1.0, 1.0, 1.0)) -> float:
    """Average symmetric surface distance (in the units of ``spacing``, numpy axis order).

    inf when exactly one of the masks is empty, 0 when both are.
    """
    pred, ref = prediction > 0, label > 0
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("inf")
    pred_surface, ref_surface = _surface(pred), _surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_kji)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_kji)
    distances = np.concatenate([to_ref[pred_surface], to_pred[ref_surface]])
    return float(distances.mean())


def label_box(label: np.ndarray, margin: int = EVAL_ROI_MARGIN):
    """The (i, j, k) box [lo, hi) of the object plus a margin, clipped to the image."""
    points = np.argwhere(label > 0)
    if points.size == 0:
        raise ValueError("the label is empty: there is no object to segment")
    lo = np.maximum(points.min(0) - margin, 0)
    hi = np.minimum(points.max(0) + 1 + margin, label.shape)
    return _ijk(lo), _ijk(hi)


# -- methods -------------------------------------------------------------------------------------
class InteractiveMethod:
    """One interactive segmentation method under the harness.

    ``start`` opens a case on an ROI box ((i, j, k) lo, hi); ``refine`` gets all clicks so far
    (array indices of the whole image, newest last) and returns the ROI's foreground
    probability (float32, numpy order).
    """

    name = "method"

    def start(self, image: Volume, box) -> None:
        self.image = image
        self.box: Box = (_ijk(box[0]), _ijk(box[1]))
        self.region = _slices(self.box)

    def refine(self, clicks: list[Click]) -> np.ndarray:
        raise NotImplementedError


class MeccaMethod(InteractiveMethod):
    """MECCA (or IteR-MRL: the same policy trained without confidence shaping)."""

    def __init__(self, model: MeccaModel, name: str = "mecca", steps_per_round: int | str = AUTO_STEPS,
                 flip_average: bool = False, lean_correction: float = LEAN_CORRECTION, start_estimate: str = "none"):
        self.model, self.name, self.steps_per_round, self.flip_average = model, name, steps_per_round, flip_average
        self.lean_correction, self.start_estimate = lean_correction, start_estimate

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        self.session = InteractiveSession(image, self.model, roi=box, steps_per_round=self.steps_per_round,
                                          flip_average=self.flip_average, lean_correction=self.lean_correction,
                                          start_estimate=self.start_estimate)

    def refine(self, clicks: list[Click]) -> np.ndarray:
        for click in clicks[len(self.session.clicks):]:
            self.session.add_click(_ijk(click.position), click.positive)
        self.session.step()
        return self.session.probability_tenths[self.region].astype(np.float32) / 10.0


class ClickCNNMethod(InteractiveMethod):
    """The supervised click-CNN baseline: each round's prediction becomes the next input."""

    name = "click-cnn"

    def __init__(self, model: MeccaModel):
        self.model = model.eval()

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        image_norm = normalize_image(image.array[self.region])
        # the grid MECCA's session uses, with this model's own minimum
        self.grid = working_grid(image_norm.shape, image.spacing[::-1], min_voxels=self.model.config.min_working_voxels)
        self.image_norm = self.grid.to_working(torch.from_numpy(image_norm)[None])
        self.probability = torch.full_like(self.image_norm, 0.5)

    @torch.no_grad()
    def refine(self, clicks: list[Click]) -> np.ndarray:
        clicks, offset = self.grid.clicks(clicks, self.box[0])
        hint = torch.from_numpy(encode_hints(self.model.config.hint_encoding, self.image_norm[0].numpy(), clicks,
                                             offset))[None]
        state = build_state(self.image_norm, self.probability, hint).to(self.model.device, self.model.dtype)
        state = state.contiguous(memory_format=torch.channels_last_3d)
        self.probability = torch.sigmoid(self.model.policy(state).float()).cpu()
        return self.grid.to_native(self.probability)[0].numpy()


class SeedMethod(InteractiveMethod):
    """Seed-based baselines: clicks become seed balls and the ROI's border a background shell
    (seeded.seed_map), as Slicer users paint them."""

    def seeds(self, clicks: list[Click]) -> np.ndarray:
        return seed_map(tuple(h - l for l, h in zip(*self.box)), clicks, self.box[0])


class GrowFromSeedsMethod(SeedMethod):
    """Slicer's Grow from seeds (vtkImageGrowCutSegment from the slicer-core wheel)."""

    name = "grow-from-seeds"

    def __init__(self):
        try:
            import slicer  # noqa: F401  (the slicer-core wheel)
        except ImportError as error:
            raise RuntimeError("grow-from-seeds needs the slicer-core package: pip install slicer-core") from error

    def refine(self, clicks: list[Click]) -> np.ndarray:
        import slicer
        import vtk
        from vtk.util import numpy_support

        def image_data(array: np.ndarray, vtk_type: int):
            data = vtk.vtkImageData()
            data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
            data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True,
                                                                      array_type=vtk_type))
            return data

        seeds = self.seeds(clicks)
        grow = slicer.vtkImageGrowCutSegment()
        grow.SetIntensityVolume(image_data(self.image.array[self.region].astype(np.float32), vtk.VTK_FLOAT))
        grow.SetSeedLabelVolume(image_data(seeds, vtk.VTK_SHORT))
        grow.SetDistancePenalty(0.0)  # Slicer's default seed locality
        grow.Update()
        labels = numpy_support.vtk_to_numpy(grow.GetOutput().GetPointData().GetScalars()).reshape(seeds.shape)
        return (labels == 1).astype(np.float32)


class RandomWalkerMethod(SeedMethod):
    """scikit-image's random walker (Grady 2006) on the normalised ROI, same seeds."""

    name = "random-walker"

    def __init__(self, beta: float = RANDOM_WALKER_BETA):
        self.beta = beta

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        self.image_norm = normalize_image(image.array[self.region])

    def refine(self, clicks: list[Click]) -> np.ndarray:
        return random_walker_probability(self.image_norm, self.seeds(clicks), self.image.spacing[::-1], self.beta)


def method_for_model(model: MeccaModel, name: str | None = None) -> InteractiveMethod:
    """The harness method that runs a model file (MECCA / IteR-MRL policies or a click-CNN)."""
    if model.config.model == "click-cnn":
        return ClickCNNMethod(model)
    return MeccaMethod(model, name or "mecca")


# -- the simulated-user harness -------------------------------------------------------------------
@dataclass
class SimulatedRun:
    """Per-round results of one case under the simulated user."""

    dice: list[float] = field(default_factory=list)
    assd_mm: list[float] = field(default_factory=list)
    misunderstanding: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    simulated_label_coverage: list[float] = field(default_factory=list)  # MECCA-type methods only
    simulated_label_accuracy: list[float] = field(default_factory=list)
    simulated_label_foreground_recall: list[float] = field(default_factory=list)
    confidence_auc: list[float] = field(default_factory=list)


def simulated_label_quality(round_: Round, label: np.ndarray, delta: float = 0.8) -> tuple[float, float, float]:
    """How good eq. 6 would be on this round's last policy step (the one its confidence judges) if
    the case were unlabelled: (coverage = fraction of moved voxels confident enough to be used,
    accuracy of their simulated labels against the truth, foreground recall = fraction of the
    true-foreground voxels used that are labelled foreground). Explains whether unlabelled cases
    can help: they teach only what these labels say, and labels that are all background can be
    accurate on a small object and still useless."""
    step = torch.from_numpy(round_.last_step_change().astype(np.float32))
    simulated, usable = simulated_labels(step, torch.from_numpy(round_.confidence), delta)
    usable = usable.numpy() & (step.numpy() != 0)
    if not usable.any():
        return 0.0, float("nan"), float("nan")
    simulated, truth = simulated.numpy().astype(bool), label > 0
    coverage = float(usable.sum() / max(np.count_nonzero(step.numpy()), 1))
    accuracy = float((simulated[usable] == truth[usable]).mean())
    foreground = usable & truth
    recall = float(simulated[foreground].mean()) if foreground.any() else float("nan")
    return coverage, accuracy, recall


def confidence_auc(round_: Round, label: np.ndarray) -> float:
    """How well the confidence separates the right moves of the round's last policy step from its
    wrong ones (ROC AUC over the voxels that moved; 0.5 = no better than chance): what the
    confidence overlay and the advice regions rest on."""
    step = round_.last_step_change()
    moved = step != 0
    return roc_auc(round_.confidence[moved], (step[moved] > 0) == (label[moved] > 0))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for telling the ``positive`` items from the others (Mann-Whitney U
    from ranks, ties averaged); nan when either class is empty."""
    positive = np.asarray(positive, bool)
    positives = int(positive.sum())
    negatives = positive.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def simulate(method: InteractiveMethod, image: Volume, label: np.ndarray, rounds: int = 5, clicks_per_round: int = 3,
             seed: int = 0, box=None, with_assd: bool = False, keep_masks: bool = False,
             on_round: Callable[[InteractiveMethod, list[Click], float], None] | None = None,
             user: str = "edge") -> SimulatedRun:
    """Run ``rounds`` rounds of the seeded simulated user (click style ``user``, see
    hints.SimulatedUser) on one case with one method.

    ``on_round(method, new_clicks, dice)`` is called after each round (progress, figures).
    """
    label = label > 0
    method.start(image, box or label_box(label))
    user = SimulatedUser(label, seed=seed, style=user)
    region = method.region
    roi_label = label[region]
    mask = np.zeros(label.shape, bool)
    probability = np.full(roi_label.shape, 0.5, np.float32)
    clicks: list[Click] = []
    run = SimulatedRun()
    for round_index in range(rounds):
        new_clicks = user.clicks(mask, clicks_per_round, round_index)
        clicks.extend(new_clicks)
        started = time.perf_counter()
        updated = method.refine(list(clicks))
        run.seconds.append(time.perf_counter() - started)
        run.misunderstanding.append(misunderstanding_rate(probability, updated, roi_label))
        probability = updated
        mask[region] = probability > 0.5
        run.dice.append(round(dice(mask, label), 6))
        if with_assd:
            run.assd_mm.append(assd(mask, label, image.spacing[::-1]))
        if keep_masks:
            run.masks.append(mask.copy())
        if isinstance(method, MeccaMethod) and method.session.last_round.p_after.shape == roi_label.shape:
            coverage, accuracy, recall = simulated_label_quality(method.session.last_round, roi_label)
            run.simulated_label_coverage.append(round(coverage, 5))
            run.simulated_label_accuracy.append(round(accuracy, 5))
            run.simulated_label_foreground_recall.append(round(recall, 5))
            run.confidence_auc.append(round(confidence_auc(method.session.last_round, roi_label), 5))
        if on_round is not None:
            on_round(method, new_clicks, run.dice[-1])
    return run


def simulate_mecca(model: MeccaModel, image: Volume, label: np.ndarray, rounds: int = 5, clicks_per_round: int = 3,
                   seed: int = 0, box=None, **options) -> tuple[SimulatedRun, InteractiveSession]:
    """simulate() with a MECCA model; also returns the session (history, confidence, advice)."""
    method = MeccaMethod(model)
    run = simulate(method, image, label, rounds, clicks_per_round, seed, box, **options)
    return run, method.session


# -- a dataset, several methods --------------------------------------------------------------------
METHODS = ("mecca", "iter-mrl", "click-cnn", "grow-from-seeds", "random-walker")


def _summary(values: list[list[float]]) -> tuple[list[float], list[float]]:
    array = np.asarray(values, dtype=float)
    finite = np.where(np.isfinite(array), array, np.nan)
    return np.nanmean(finite, axis=0).round(5).tolist(), np.nanstd(finite, axis=0).round(5).tolist()


def evaluate_cases(cases: list[Case], methods: dict[str, Callable[[], InteractiveMethod]], labels=None,
                   rounds: int = 5, clicks_per_round: int = 3, seed: int = 0, progress: bool = True,
                   user: str = "edge"):
    """Run every method on every case; returns (per-method summary, failures, figure case).

    A case that cannot be read, or fails for a method, is reported in ``failures`` and skipped
    (for that method); the run goes on. The figure case is the first case, with every method's
    last-round mask.
    """
    from tqdm import tqdm

    results = {name: {"per_case": [], "seconds": []} for name in methods}
    failures, figure = [], None
    for case in tqdm(cases, desc="cases", disable=not progress):
        try:
            image, label = case.load(labels)
            if not label.any():
                raise InputError("the label has no foreground voxel for the chosen label values")
        except (InputError, OSError, ValueError) as error:
            failures.append({"case": case.name, "method": None, "error": str(error)})
            continue
        keep = figure is None
        if keep:
            figure = {"case": case.name, "image": image, "label": label, "masks": {}}
        case_name = case.name
        for name, factory in methods.items():
            try:
                run = simulate(factory(), image, label, rounds, clicks_per_round, seed, with_assd=True, keep_masks=keep,
                               user=user)
            except Exception as error:  # noqa: BLE001 - one bad case must not end the evaluation
                failures.append({"case": case_name, "method": name, "error": f"{type(error).__name__}: {error}"})
                continue
            results[name]["per_case"].append({"case": case_name, "dice_per_round": run.dice,
                                              "assd_mm_per_round": [round(a, 4) for a in run.assd_mm],
                                              "misunderstanding_rate_per_round": [round(m, 6) for m in run.misunderstanding],
                                              "seconds_per_round": [round(s, 4) for s in run.seconds],
                                              **({"simulated_label_coverage_per_round": run.simulated_label_coverage,
                                                  "simulated_label_accuracy_per_round": run.simulated_label_accuracy,
                                                  "simulated_label_foreground_recall_per_round": run.simulated_label_foreground_recall,
                                                  "confidence_auc_per_round": run.confidence_auc}
                                                 if run.simulated_label_accuracy else {})})
            results[name]["seconds"].extend(run.seconds)
            if keep:
                figure["masks"][name] = run.masks[-1]
    summary = {}
    for name, result in results.items():
        per_case = result["per_case"]
        if not per_case:
            summary[name] = {"cases": 0, "per_case": []}
            continue
        dice_mean, dice_sd = _summary([c["dice_per_round"] for c in per_case])
        assd_mean, _ = _summary([c["assd_mm_per_round"] for c in per_case])
        misunderstanding, _ = _summary([c["misunderstanding_rate_per_round"] for c in per_case])
        summary[name] = {"cases": len(per_case), "dice_mean_per_round": dice_mean, "dice_sd_per_round": dice_sd,
                         "assd_mm_mean_per_round": assd_mean, "misunderstanding_rate_per_round": misunderstanding,
                         "seconds_per_round_median": round(float(np.median(result["seconds"])), 4),
                         "per_case": per_case}
        if "simulated_label_accuracy_per_round" in per_case[0]:
            for key in ("simulated_label_coverage_per_round", "simulated_label_accuracy_per_round",
                        "simulated_label_foreground_recall_per_round", "confidence_auc_per_round"):
                summary[name][key] = _summary([c[key] for c in per_case])[0]
    return summary, failures, figure


def tune_random_walker_beta(cases: list[Case], labels=None, rounds: int = 5, clicks_per_round: int = 3,
                            seed: int = 0, user: str = "edge", betas=RANDOM_WALKER_BETAS,
                            progress: bool = True) -> tuple[float, dict[float, float]]:
    """The random walker's beta with the best mean Dice over ``rounds`` on ``cases`` (training cases:
    never the ones it is then compared on), under the same user and clicks; returns (beta, mean Dice
    over cases and rounds for each beta tried). scikit-image's default of 130 suits an image whose
    edges are a fraction of its spread; on some scans a larger beta finds the edges much better."""
    scores = {}
    for beta in betas:
        summary, _, _ = evaluate_cases(cases, {"random-walker": lambda b=beta: RandomWalkerMethod(b)}, labels, rounds,
                                       clicks_per_round, seed, progress, user)
        per_round = summary["random-walker"].get("dice_mean_per_round")
        scores[beta] = round(float(np.mean(per_round)), 5) if per_round else float("nan")
    best = max(scores, key=lambda b: -1.0 if np.isnan(scores[b]) else scores[b])
    return best, scores
