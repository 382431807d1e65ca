"""The simulated-user harness (paper section 5): interactive methods behind one interface, run
round after round under the same seeded simulated user.

Every method sees the same thing: an ROI (the object's box plus a margin, as a user would draw
it) and, each round, the simulated user's clicks computed from that method's own previous mask.
MECCA runs through the same InteractiveSession a clinician uses. Other methods (the research
baselines: InterCNN, DeepIGeoS, the automatic P-Net and U-Net, Grow from seeds, the random
walker) subclass ``InteractiveMethod`` and are named in ``METHODS`` with ``register_method``; the
harness knows nothing else about them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .clicks import Click
from .datasets import Case
from .environment import simulated_labels
from .errors import InputError
from .geometry import Box, box_slices, ijk_from_kji, kji_from_ijk, label_box
from .metrics import assd, dice, misunderstanding_rate, roc_auc
from .networks import MeccaModel
from .session import InteractiveSession, Round
from .users import SimulatedUser
from .volume import Volume

HARNESS_KEYS = {"case", "dice_per_round", "assd_mm_per_round", "misunderstanding_rate_per_round", "seconds_per_round"}


# -- methods -------------------------------------------------------------------------------------
class InteractiveMethod:
    """One interactive segmentation method under the harness.

    ``start`` opens a case on an ROI box ((i, j, k) lo, hi); ``refine`` gets all clicks so far
    (array indices of the whole image, newest last) and returns the ROI's foreground
    probability (float32, numpy order); ``round_report`` may add per-round figures of its own.
    """

    name = "method"

    def start(self, image: Volume, box) -> None:
        self.image = image
        self.box: Box = (kji_from_ijk(box[0]), kji_from_ijk(box[1]))
        self.region = box_slices(self.box)

    def refine(self, clicks: list[Click]) -> np.ndarray:
        raise NotImplementedError

    def round_report(self, roi_label: np.ndarray) -> dict[str, float]:
        """Figures of the round just run, beyond the masks (none by default)."""
        return {}


METHODS: dict[str, Callable[..., InteractiveMethod]] = {}  # name -> factory


def register_method(name: str, factory: Callable[..., InteractiveMethod]) -> None:
    """Make a method available to ``evaluate`` by name (the research baselines register theirs)."""
    METHODS[name] = factory


class MeccaMethod(InteractiveMethod):
    """MECCA (or IteR-MRL: the same policy trained without confidence shaping), through a session."""

    def __init__(self, model: MeccaModel, name: str = "mecca", steps_per_round: int | str | None = None,
                 flip_average: bool = False, lean_correction: float | None = None, start_estimate: str = "none"):
        """``steps_per_round`` and ``lean_correction``: None takes the model's own (MeccaModel.inference)."""
        self.model, self.name, self.steps_per_round, self.flip_average = model, name, steps_per_round, flip_average
        self.lean_correction, self.start_estimate = lean_correction, start_estimate

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        self.session = InteractiveSession(image, self.model, roi=box, steps_per_round=self.steps_per_round,
                                          flip_average=self.flip_average, lean_correction=self.lean_correction,
                                          start_estimate=self.start_estimate)

    def refine(self, clicks: list[Click]) -> np.ndarray:
        for click in clicks[len(self.session.clicks):]:
            self.session.add_click(ijk_from_kji(click.position), click.positive)
        self.session.step()
        return self.session.probability_tenths[self.region].astype(np.float32) / 10.0

    def round_report(self, roi_label: np.ndarray) -> dict[str, float]:
        """How good eq. 6's simulated labels and the confidence would be on this round."""
        round_ = self.session.last_round
        coverage, accuracy, recall = simulated_label_quality(round_, roi_label)
        return {"simulated_label_coverage": coverage, "simulated_label_accuracy": accuracy,
                "simulated_label_foreground_recall": recall, "confidence_auc": confidence_auc(round_, roi_label)}


register_method("mecca", MeccaMethod)


# -- the simulated-user harness -------------------------------------------------------------------
@dataclass
class SimulatedRun:
    """Per-round results of one case under the simulated user."""

    dice: list[float] = field(default_factory=list)
    assd_mm: list[float] = field(default_factory=list)
    misunderstanding: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    reports: dict[str, list[float]] = field(default_factory=dict)  # the method's own per-round figures


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


def simulate(method: InteractiveMethod, image: Volume, label: np.ndarray, rounds: int = 5, clicks_per_round: int = 3,
             seed: int = 0, box=None, with_assd: bool = False, keep_masks: bool = False,
             on_round: Callable[[InteractiveMethod, list[Click], float], None] | None = None,
             user: str = "edge") -> SimulatedRun:
    """Run ``rounds`` rounds of the seeded simulated user (click style ``user``, see
    users.SimulatedUser) on one case with one method.

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
            run.assd_mm.append(assd(mask, label, image.spacing_kji))
        if keep_masks:
            run.masks.append(mask.copy())
        for key, value in method.round_report(roi_label).items():
            run.reports.setdefault(key, []).append(round(float(value), 5))
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
def _summary(values: list[list[float]]) -> tuple[list[float], list[float]]:
    array = np.asarray(values, dtype=float)
    finite = np.where(np.isfinite(array), array, np.nan)
    return np.nanmean(finite, axis=0).round(5).tolist(), np.nanstd(finite, axis=0).round(5).tolist()


def evaluate(cases: list[Case], methods: dict[str, Callable[[], InteractiveMethod]], labels=None,
             rounds: int = 5, clicks_per_round: int = 3, seed: int = 0, progress: bool = True, user: str = "edge"):
    """Run every method on every case under the same seeded simulated user (what ``mecca evaluate``
    and ``python -m research.compare`` run).

    Parameters
    ----------
    cases : list of io.Case
        Labelled cases (``MSDDataset.open(folder).cases``).
    methods : dict of name -> callable
        Each makes a fresh ``InteractiveMethod`` (``MeccaMethod``, or a registered baseline).
    labels : tuple of int, optional
        Label values that count as foreground (default: every non-zero value).
    rounds, clicks_per_round : int
        The protocol: ``rounds`` rounds of ``clicks_per_round`` clicks each.
    seed : int
        Seed of the simulated user: every method gets the same click points.
    progress : bool
        Show a progress bar.
    user : {"edge", "interior", "random"}
        The simulated user's click style (``users.SimulatedUser``).

    Returns
    -------
    summary : dict
        Per method: cases, Dice and ASSD mean and sd per round, misunderstanding rate per round,
        seconds per round, and every case's figures.
    failures : list of dict
        Cases that could not be read or failed for a method (skipped for it; the run goes on).
    figure_case : dict or None
        The first case with every method's last-round mask, for the evaluation figure.
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
                                              **{f"{key}_per_round": values for key, values in run.reports.items()}})
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
        for key in set(per_case[0]) - HARNESS_KEYS:  # the method's own per-round figures (round_report)
            summary[name][key] = _summary([c[key] for c in per_case])[0]
    return summary, failures, figure
