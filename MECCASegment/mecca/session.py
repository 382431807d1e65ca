"""InteractiveSession: one image, the user's clicks, and MECCA rounds over a region of interest.

Only the ROI goes through the networks, so a 512 x 512 x 300 CT costs what its ROI costs. The
ROI is either a box the user gives or grows from the clicks (and a starting segment) with a
margin in millimetres. The whole-volume state is one byte per voxel (probability in tenths);
each round keeps the ROI's before/after values so undo and redo are exact and cheap.

Indices in this API are ITK/Slicer (i, j, k) voxel indices; arrays are numpy (k, j, i).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import torch

from .advice import (
    ADVICE_COUNT,
    RANKINGS,
    ROUNDS_WITH_OWN_GRANULARITY,
    AdviceRegion,
    Supervoxels,
    advice_label_map,
    doubt_pieces,
    rank_regions,
    segments_for_round,
    supervoxels,
)
from .clicks import Click
from .defaults import AUTO_STEPS, START_ESTIMATES, checked_lean_correction
from .environment import (
    ACTION_TENTHS,
    MASK_TENTHS,
    START_TENTHS,
    action_tenths,
    build_state,
    normalize_image,
    transition,
)
from .errors import InputError, SessionError
from .geometry import Box, box_slices, ijk_from_kji, kji_from_ijk
from .hints import encode_hints
from .networks import MeccaModel
from .seeded import random_walker_probability, seed_map
from .volume import Volume, validate_image
from .working_grid import WORKING_MAX_VOXELS, WorkingGrid, working_grid

DEFAULT_ROI_MARGIN_MM = 30.0
# Automatic steps per round: as many policy steps as keep steps x working voxels within the time of
# three steps at 80^3 (about 0.2 s on a 2-core laptop CPU, under the 96^3 round's 0.25 s target),
# at most MAX_AUTO_STEPS (more gain nothing: research/NOTEBOOK.md, "Steps per round"). Why more than one:
# a voxel the policy has made sure of (p = 0 or 1) needs two steps to cross 0.5, so with one step a
# click shows only a round later.
STEP_BUDGET_VOXELS = 3 * 80**3
MAX_AUTO_STEPS = 3


def automatic_steps(working_shape) -> int:
    """Policy steps per round on a working grid of ``working_shape`` voxels (``steps_per_round="auto"``)."""
    voxels = int(np.prod(working_shape, dtype=np.int64))
    return int(min(MAX_AUTO_STEPS, max(1, STEP_BUDGET_VOXELS // voxels)))


class RoundSummary(TypedDict):
    """What ``InteractiveSession.step``, ``undo`` and ``redo`` return: one round, in plain values
    (JSON-ready; voxel positions and sizes in ITK/Slicer (i, j, k) order)."""

    round: int  # 1-based index of the round
    clicks: int  # clicks the round was given
    policy_steps: int
    mean_confidence: float  # of the last policy step's actions over the ROI
    lean_correction: float
    seconds: float
    changed_voxels: int  # in the ROI
    foreground_voxels_in_roi: int
    roi_lo_ijk: list[int]  # the ROI the networks saw, [lo, hi)
    roi_hi_ijk: list[int]
    working_size_ijk: list[int]  # the grid the networks worked on
    timings: dict[str, float]


@dataclass
class Round:
    """What one round did, enough to undo and redo it exactly."""

    index: int
    clicks: list[Click]
    box: Box
    p_before: np.ndarray
    p_after: np.ndarray
    confidence: np.ndarray  # of the last policy step's actions
    steps: int = 1  # policy steps the round took
    lean_correction: float = 0.0  # how much its "up" scores were lowered
    p_before_last_step: np.ndarray | None = None  # when steps > 1: p before the step ``confidence`` judges
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    working_shape: tuple[int, int, int] | None = None  # the grid the networks saw (k, j, i), when not the ROI's own
    advice: list[AdviceRegion] | None = None  # computed when first asked for
    advice_labels: np.ndarray | None = None

    def last_step_change(self) -> np.ndarray:
        """p after minus p before the round's last policy step (tenths, int16): the moves that
        ``confidence`` judges (the whole round's when it took one step)."""
        before = self.p_before if self.p_before_last_step is None else self.p_before_last_step
        return self.p_after.astype(np.int16) - before.astype(np.int16)

    def summary(self) -> RoundSummary:
        changed = int(np.count_nonzero(self.p_before != self.p_after))
        return {"round": self.index, "clicks": len(self.clicks), "policy_steps": self.steps,
                "mean_confidence": round(float(self.confidence.mean()), 4),
                "lean_correction": self.lean_correction, "seconds": self.seconds,
                "changed_voxels": changed, "foreground_voxels_in_roi": int(np.count_nonzero(self.p_after > 5)),
                "roi_lo_ijk": list(ijk_from_kji(self.box[0])), "roi_hi_ijk": list(ijk_from_kji(self.box[1])),
                "working_size_ijk": list(ijk_from_kji(self.working_shape or self.p_after.shape)),
                "timings": dict(self.timings)}


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so per-part timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class InteractiveSession:
    """MECCA on one image: clicks in, rounds of policy steps, a mask, its confidence and the regions
    where a click would help most.

    Parameters
    ----------
    image : Volume
        The scan (any voxel type; its geometry maps clicks given in world coordinates).
    model : MeccaModel
        From ``load_model``; its file's session defaults fill the options left at None.
    roi : pair of (i, j, k) indices, optional
        The box [lo, hi) the networks see, in ITK/Slicer (i, j, k) order (as ``set_roi``); without
        one, the clicks' box grown by ``roi_margin_mm``.
    initial_mask : ndarray, optional
        An existing segment (numpy (k, j, i) order, the image's shape) to refine, never wiped.
    roi_margin_mm : float
        How far around the clicks the region grows when there is no ROI.
    advice_count : int
        How many "click here next" regions a round offers.
    advice_ranking : {"mean", "doubtful_voxels", "doubt_components"}
        How they are chosen (advice.RANKINGS): the supervoxels of the paper's lowest mean
        confidence or of the most expected wrong actions, or the doubtful voxels' connected pieces.
    max_working_voxels : int, optional
        The largest grid the networks see (larger ROIs are resampled to it).
    steps_per_round : int or "auto", optional
        Policy steps a round takes with the same clicks. One is the paper's round; more reach a
        given Dice in fewer rounds (research/NOTEBOOK.md, "Steps per round") at that many times the
        policy's time. "auto" takes as many as the ROI's working grid allows within the time
        budget (``automatic_steps``): 3 up to 80^3 voxels, 1 from 96^3. Default: the model's.
    flip_average : bool
        Average each step's policy over the ROI and its three single-axis flips: about a Dice point
        more at 4x the policy's time. Settable between rounds.
    lean_correction : float, optional
        Lower the policy's "up" scores by this much in every round after the first (0: the
        policy's own decisions). Settable between rounds. Default: the model's.
    start_estimate : {"none", "random-walker"}
        What the first round starts from: p = 0.5 in the ROI (the paper's start), or the random
        walker's mask on the first round's clicks (p = 0.9 inside, 0.1 outside), which the policy
        then refines: a start that knows nothing of any structure, for objects the model was not
        trained on. Ignored when the session starts from ``initial_mask``.

    Raises
    ------
    InputError
        An image, mask or option that cannot be used; the message says which and why.

    Examples
    --------
    >>> session = InteractiveSession(read_volume("scan.nii.gz"), load_model())  # doctest: +SKIP
    >>> session.add_click((40, 52, 17), positive=True)                          # doctest: +SKIP
    >>> summary = session.step()        # one round: a RoundSummary             # doctest: +SKIP
    >>> session.mask, session.confidence_map(), session.advice_regions          # doctest: +SKIP
    >>> session.undo(); session.redo()                                           # doctest: +SKIP
    """

    def __init__(self, image: Volume, model: MeccaModel, roi: tuple | None = None,
                 initial_mask: np.ndarray | None = None, roi_margin_mm: float = DEFAULT_ROI_MARGIN_MM,
                 advice_count: int = ADVICE_COUNT, max_working_voxels: int | None = WORKING_MAX_VOXELS,
                 steps_per_round: int | str | None = None, flip_average: bool = False,
                 lean_correction: float | None = None, start_estimate: str = "none", advice_ranking: str = "mean"):
        if not isinstance(image, Volume):
            raise InputError(f"a session needs an image (an io.Volume), got {type(image).__name__}: load an image first")
        validate_image(image.array, image.spacing, name=image.name or "image")
        if start_estimate not in START_ESTIMATES:
            raise InputError(f"the start estimate must be one of {', '.join(START_ESTIMATES)}, got {start_estimate!r}")
        self.start_estimate = start_estimate if initial_mask is None else "none"
        self.steps_per_round = model.inference["steps_per_round"] if steps_per_round is None else steps_per_round
        self.flip_average = flip_average
        self.lean_correction = model.inference["lean_correction"] if lean_correction is None else lean_correction
        self.image = image
        self.model = model.eval()
        self.roi_margin_mm = float(roi_margin_mm)
        self.advice_count = advice_count
        if advice_ranking not in RANKINGS:
            raise InputError(f"the advice ranking must be one of {', '.join(RANKINGS)}, got {advice_ranking!r}")
        self.advice_ranking = advice_ranking
        self.max_working_voxels = max_working_voxels
        self._lock = threading.Lock()
        self._p = np.full(image.shape, START_TENTHS, np.uint8)
        self._seed_box: Box | None = None
        if initial_mask is not None:
            self._start_from_mask(initial_mask)
        self._user_box: Box | None = None
        if roi is not None:
            self.set_roi(*roi)
        self._pending: list[Click] = []
        self._rounds: list[Round] = []
        self._redo: list[Round] = []
        self._normalized: tuple[Box, np.ndarray] | None = None
        self._features: tuple[tuple, dict] | None = None  # (ROI and working grid, image features by flip)
        self._supervoxels: dict[tuple[Box, int], Supervoxels] = {}
        self._device_confidence: tuple[Round, torch.Tensor] | None = None  # the last round's, on a GPU

    @property
    def steps_per_round(self) -> int | str:
        return self._steps_per_round

    @steps_per_round.setter
    def steps_per_round(self, steps: int | str) -> None:
        """Settable between rounds (the Slicer module's "Steps per round")."""
        if steps != AUTO_STEPS and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise InputError(f"steps per round must be a whole number of at least 1 or {AUTO_STEPS!r}, got {steps!r}")
        self._steps_per_round = steps

    @property
    def flip_average(self) -> bool:
        return self._flip_average

    @flip_average.setter
    def flip_average(self, value: bool) -> None:
        """A yes/no choice: a string such as "false" would otherwise read as on."""
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"averaging over flips is on (True) or off (False), got {value!r}")
        self._flip_average = bool(value)

    @property
    def lean_correction(self) -> float:
        return self._lean_correction

    @lean_correction.setter
    def lean_correction(self, value: float) -> None:
        self._lean_correction = checked_lean_correction(value)

    # -- setup ---------------------------------------------------------------------------------
    def _start_from_mask(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.shape != self.image.shape:
            raise InputError(f"starting segment has size {ijk_from_kji(mask.shape)} but the image is {self.image.size_ijk}")
        inside = mask > 0
        self._p[...] = np.where(inside, MASK_TENTHS[1], MASK_TENTHS[0])
        if inside.any():
            points = np.argwhere(inside)
            self._seed_box = (tuple(points.min(0)), tuple(points.max(0) + 1))

    def set_roi(self, lo_ijk, hi_ijk) -> None:
        """Fix the ROI to the box [lo, hi) in (i, j, k) indices, clipped to the image."""
        lo, hi = np.array(kji_from_ijk(lo_ijk)), np.array(kji_from_ijk(hi_ijk))
        lo_ijk, hi_ijk = ijk_from_kji(lo), ijk_from_kji(hi)  # plain ints for the messages
        shape = np.array(self.image.shape)
        lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        if np.any(hi <= lo):
            raise InputError(f"ROI {lo_ijk}-{hi_ijk} does not overlap the image "
                             f"(size {self.image.size_ijk} in i, j, k)")
        for click in getattr(self, "_pending", []):
            if any(not low <= p < high for p, low, high in zip(click.position, lo, hi)):
                raise InputError(f"the queued click at {ijk_from_kji(click.position)} lies outside the ROI "
                                 f"{lo_ijk}-{hi_ijk}; run or undo that click first, or make the ROI larger")
        self._user_box = (tuple(int(v) for v in lo), tuple(int(v) for v in hi))

    def clear_roi(self) -> None:
        """Go back to an ROI grown from the clicks."""
        self._user_box = None

    # -- clicks --------------------------------------------------------------------------------
    def add_click(self, ijk, positive: bool) -> Click:
        """Queue a click for the next round.

        Parameters
        ----------
        ijk : sequence of 3 numbers
            The voxel in ITK/Slicer (i, j, k) order (rounded to the nearest voxel).
        positive : bool
            True: the segment should extend here; False: it should retract.

        Returns
        -------
        Click
            The click as the session keeps it (numpy (k, j, i) position).

        Raises
        ------
        InputError
            A click outside the image or outside the ROI set with ``set_roi``.
        """
        index = np.asarray(ijk, dtype=float)
        if index.shape != (3,) or not np.all(np.isfinite(index)):
            raise InputError(f"a click needs three finite voxel indices (i, j, k), got {ijk!r}")
        position = kji_from_ijk(np.rint(index).astype(int))
        if any(p < 0 or p >= s for p, s in zip(position, self.image.shape)):
            raise InputError(f"click {tuple(int(v) for v in np.rint(index))} lies outside the image "
                             f"(size {self.image.size_ijk} in i, j, k)")
        if self._user_box is not None and any(not lo <= p < hi for p, lo, hi in zip(position, *self._user_box)):
            raise InputError(f"click {ijk_from_kji(position)} lies outside the ROI {ijk_from_kji(self._user_box[0])}-"
                             f"{ijk_from_kji(self._user_box[1])}; enlarge the ROI or clear it")
        click = Click(position, bool(positive))
        with self._lock:
            self._pending.append(click)
            self._redo.clear()
        return click

    def add_click_world(self, point_lps, positive: bool) -> Click:
        """Queue a click given as an LPS world point (ITK convention)."""
        return self.add_click(self.image.world_to_index(point_lps), positive)

    @property
    def clicks(self) -> list[Click]:
        """Every click in effect: those of the rounds run so far, then the pending ones."""
        return [c for r in self._rounds for c in r.clicks] + list(self._pending)

    @property
    def pending_clicks(self) -> list[Click]:
        return list(self._pending)

    @property
    def clicks_by_round(self) -> list[list[Click]]:
        """The clicks each round used, in order (undone rounds excluded)."""
        return [list(r.clicks) for r in self._rounds]

    # -- ROI -----------------------------------------------------------------------------------
    def current_box(self) -> Box:
        """The box the next round will use."""
        if self._user_box is not None:
            return self._user_box
        points = [c.position for c in self.clicks]
        boxes = [b for b in (self._seed_box, *(r.box for r in self._rounds)) if b is not None]
        if not points and not boxes:
            raise SessionError("no ROI yet: add a click or set an ROI box first")
        margin = np.ceil(self.roi_margin_mm / np.array(self.image.spacing_kji)).astype(int)
        shape = np.array(self.image.shape)
        lows, highs = [], []
        if points:
            pts = np.array(points)
            lows.append(pts.min(0) - margin)
            highs.append(pts.max(0) + 1 + margin)
        if self._seed_box is not None:
            lows.append(np.array(self._seed_box[0]) - margin)
            highs.append(np.array(self._seed_box[1]) + margin)
        for box in boxes:  # the ROI never shrinks: earlier rounds' work stays inside it
            lows.append(np.array(box[0]))
            highs.append(np.array(box[1]))
        lo = np.clip(np.min(lows, axis=0), 0, shape)
        hi = np.clip(np.max(highs, axis=0), 0, shape)
        return tuple(int(v) for v in lo), tuple(int(v) for v in hi)

    def _normalized_roi(self, box: Box) -> np.ndarray:
        if self._normalized is None or self._normalized[0] != box:
            self._normalized = (box, normalize_image(self.image.array[box_slices(box)]))
        return self._normalized[1]

    def _supervoxels_for(self, box: Box, image_norm: np.ndarray, n_segments: int) -> Supervoxels:
        key = (box, n_segments)
        if key not in self._supervoxels:
            self._supervoxels[key] = supervoxels(image_norm, n_segments, self.image.spacing_kji)
        return self._supervoxels[key]

    # -- rounds --------------------------------------------------------------------------------
    def step(self) -> RoundSummary:
        """Run one MECCA round: ``steps_per_round`` policy steps on the ROI with every click so far.

        Returns
        -------
        RoundSummary
            What the round did (its ROI, steps, changed voxels, time); ``mask``,
            ``confidence_map()`` and ``advice_regions`` hold its results.

        Raises
        ------
        SessionError
            Before the first click when there is no ROI.
        """
        with self._lock:
            start = time.perf_counter()
            timings = {}
            box = self.current_box()
            region = box_slices(box)
            image_norm = self._normalized_roi(box)  # cached while the ROI stays the same
            p_before = self._p[region].copy()
            grid = working_grid(image_norm.shape, self.image.spacing_kji, self.max_working_voxels,
                                self.model.config.min_working_voxels)
            image = grid.to_working(torch.from_numpy(image_norm)[None])
            timings["prepare_s"] = time.perf_counter() - start
            t = time.perf_counter()
            clicks, offset = grid.clicks(self.clicks, box[0])
            hint = encode_hints(self.model.config.hint_encoding, image[0].numpy(), clicks, offset)
            timings["hint_s"] = time.perf_counter() - t

            steps = automatic_steps(grid.shape) if self.steps_per_round == AUTO_STEPS else self.steps_per_round
            up_bias = self.lean_correction if self._rounds else 0.0
            p_start = p_before
            if not self._rounds and self.start_estimate == "random-walker":
                t = time.perf_counter()
                estimate = random_walker_probability(image_norm, seed_map(image_norm.shape, self.clicks, box[0]),
                                                     self.image.spacing_kji) > 0.5
                p_start = np.where(estimate, MASK_TENTHS[1], MASK_TENTHS[0]).astype(np.uint8)
                timings["start_estimate_s"] = time.perf_counter() - t
            features = self._image_features_for(box, grid.shape)
            p_last_step, p_after, device_confidence = self._act(grid, image, p_start, hint, steps, up_bias, timings,
                                                                features)
            t = time.perf_counter()
            confidence = device_confidence.cpu().numpy()
            timings["to_host_s"] += time.perf_counter() - t
            self._p[region] = p_after
            judged_from = p_last_step if steps > 1 or p_start is not p_before else None  # p before the judged step
            round_ = Round(len(self._rounds) + 1, list(self._pending), box, p_before, p_after, confidence, steps,
                           lean_correction=up_bias, p_before_last_step=judged_from,
                           timings=timings, working_shape=None if grid.is_native else grid.shape)
            self._rounds.append(round_)
            # kept where it was computed, so the advice is ranked there (on a GPU: no CPU pass per round)
            self._device_confidence = (round_, device_confidence) if device_confidence.device.type != "cpu" else None
            self._pending.clear()
            self._redo.clear()
            round_.seconds = time.perf_counter() - start
            return round_.summary()

    def _image_features_for(self, box: Box, working_shape) -> dict:
        """The image features of the split architecture's encoder for this ROI and working grid, by
        flip (MeccaModel.action_scores fills it): computed on the ROI's first round, reused while it
        stays (an empty dict for the joint architecture, which needs none)."""
        key = (box, tuple(working_shape))
        if self._features is None or self._features[0] != key:
            self._features = (key, {})
        return self._features[1]

    @torch.no_grad()
    def _act(self, grid: WorkingGrid, image: torch.Tensor, p_tenths: np.ndarray, hint: np.ndarray, steps: int,
             up_bias: float, timings: dict, features: dict):
        """Greedy actions of the policy on the working grid, applied to p on the ROI's own voxels
        (eq. 1), ``steps`` times with the same clicks, the "up" scores lowered by ``up_bias``.
        Returns p before the last step, p after it, and the confidence of the last step's actions.
        ``image`` (normalised) and ``hint`` are already on the working grid; ``features``: the
        image's features cache (``_image_features_for``)."""
        device, dtype = self.model.device, self.model.dtype
        t = time.perf_counter()
        p = torch.from_numpy(p_tenths)[None].to(device)
        image = image.to(device)
        hint_tensor = torch.from_numpy(hint)[None].to(device)
        timings["policy_s"] = timings["transition_s"] = 0.0
        up_actions = torch.tensor([tenths > 0 for tenths in ACTION_TENTHS], device=device).view(1, -1, 1, 1, 1)
        for _ in range(steps):
            p_last_step = p
            state = build_state(image, grid.tenths_to_working(p), hint_tensor)
            state = state.to(dtype).contiguous(memory_format=torch.channels_last_3d)
            logits = self.model.action_scores(state, self.flip_average, features)
            if up_bias:
                logits = logits - up_bias * up_actions.to(logits.dtype)
            actions = action_tenths(logits.argmax(dim=1))
            native_actions = actions if grid.is_native else action_tenths(grid.argmax_to_native(logits))
            _synchronize(device)
            timings["policy_s"] += time.perf_counter() - t
            t = time.perf_counter()
            p = transition(p, native_actions)
            timings["transition_s"] += time.perf_counter() - t
            t = time.perf_counter()
        confidence = torch.sigmoid(self.model.confidence_logits(state, (actions.float() / 10.0).to(dtype),
                                                                features.get(None)).float())
        confidence = grid.to_native(confidence)[0]
        _synchronize(device)  # on a GPU the kernels run asynchronously: each part is timed to its end
        timings["confidence_s"] = time.perf_counter() - t
        t = time.perf_counter()
        p_last_step, p = p_last_step[0].cpu().numpy(), p[0].cpu().numpy()
        timings["to_host_s"] = time.perf_counter() - t
        return p_last_step, p, confidence

    def undo(self) -> RoundSummary:
        """Revert the last round (and drop clicks not yet run). Raises SessionError with no history."""
        with self._lock:
            if not self._rounds:
                raise SessionError("nothing to undo")
            round_ = self._rounds.pop()
            self._p[box_slices(round_.box)] = round_.p_before
            self._pending.clear()
            self._redo.append(round_)
            return round_.summary()

    def redo(self) -> RoundSummary:
        """Re-apply the last undone round. Raises SessionError when there is none."""
        with self._lock:
            if not self._redo:
                raise SessionError("nothing to redo")
            round_ = self._redo.pop()
            self._p[box_slices(round_.box)] = round_.p_after
            self._rounds.append(round_)
            return round_.summary()

    @property
    def can_undo(self) -> bool:
        return bool(self._rounds)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # -- results -------------------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return len(self._rounds)

    @property
    def history(self) -> list[RoundSummary]:
        return [r.summary() for r in self._rounds]

    @property
    def clicks_not_followed(self) -> int:
        """Clicks in effect whose voxel the segment leaves on the wrong side (a + click outside it, a -
        click inside): a sign, needing no reference, that the model does not follow the user."""
        return sum(int((self._p[c.position] > 5) != c.positive) for r in self._rounds for c in r.clicks)

    @property
    def probability_tenths(self) -> np.ndarray:
        """Whole-volume probability in tenths (uint8, 0..10); a copy."""
        return self._p.copy()

    @property
    def probability(self) -> np.ndarray:
        """Whole-volume probability as float32 (one copy)."""
        return np.divide(self._p, np.float32(10), dtype=np.float32)

    @property
    def mask(self) -> np.ndarray:
        """Segmentation = p > 0.5 (uint8, whole volume)."""
        return (self._p > 5).astype(np.uint8)

    @property
    def last_box(self) -> Box | None:
        return self._rounds[-1].box if self._rounds else None

    @property
    def last_round(self) -> Round | None:
        """The last round's record (its ROI's probabilities before and after, confidence); do not modify."""
        return self._rounds[-1] if self._rounds else None

    def mask_region(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Segmentation inside a numpy (k, j, i) region only: no whole-volume copy on large images."""
        return (self._p[region] > 5).astype(np.uint8)

    def confidence_region(self) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """The last round's ROI as numpy (k, j, i) slices and its confidence (a copy); None before
        the first round. The whole-volume confidence_map() is this, filled in."""
        if not self._rounds:
            return None
        return box_slices(self._rounds[-1].box), self._rounds[-1].confidence.copy()

    def confidence_map(self, fill_value: float = 1.0) -> np.ndarray:
        """Confidence of the last round's actions, whole volume; ``fill_value`` outside its ROI
        (no action was taken there). All ``fill_value`` before the first round."""
        out = np.full(self.image.shape, fill_value, np.float32)
        if self._rounds:
            out[box_slices(self._rounds[-1].box)] = self._rounds[-1].confidence
        return out

    def precompute_advice(self) -> None:
        """Compute the supervoxels of every round's granularity for the current ROI now (e.g. in a
        background thread while the user looks for the first click), so rounds only rank them."""
        box = self.current_box()
        image_norm = self._normalized_roi(box)
        for round_index in range(ROUNDS_WITH_OWN_GRANULARITY):
            self._supervoxels_for(box, image_norm, segments_for_round(round_index))

    def _advise(self, round_: Round) -> Round:
        """Rank the ROI's supervoxels by the round's confidence (once per round, on demand:
        simulations that never look at the advice do not pay for SLIC)."""
        if round_.advice is None:
            start = time.perf_counter()
            confidence = round_.confidence
            if self._device_confidence is not None and self._device_confidence[0] is round_:
                confidence = self._device_confidence[1]
            regions = self._advice_partition(round_)
            round_.advice = rank_regions(regions, confidence, self.advice_count, self.advice_ranking)
            round_.advice_labels = advice_label_map(regions, round_.advice, torch.as_tensor(confidence).device)
            round_.timings["advice_s"] = time.perf_counter() - start
        return round_

    @property
    def advice_regions(self) -> list[AdviceRegion]:
        """The last round's suggested regions, centres as whole-image (i, j, k) indices."""
        if not self._rounds:
            return []
        with self._lock:
            round_ = self._advise(self._rounds[-1])
        offset = np.array(round_.box[0])
        return [AdviceRegion(r.rank, r.label, ijk_from_kji(np.array(r.centre) + offset), r.voxel_count, r.mean_confidence,
                             r.doubtful_voxels)
                for r in round_.advice]

    def advice_supervoxels(self) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """The last round's ROI as numpy (k, j, i) slices and the labels of the regions (1..n) its advice
        was chosen from (SLIC supervoxels, or the doubtful pieces it kept); None before the first round
        (for comparing guides)."""
        if not self._rounds:
            return None
        return box_slices(self._rounds[-1].box), self._advice_partition(self._rounds[-1]).labels.copy()

    def _advice_partition(self, round_: Round) -> Supervoxels:
        """The regions a round's advice is chosen from: the doubtful pieces of its confidence
        (advice_ranking "doubt_components") or the ROI's SLIC supervoxels at the round's granularity."""
        if self.advice_ranking == "doubt_components":
            return doubt_pieces(round_.confidence)
        return self._supervoxels_for(round_.box, self._normalized_roi(round_.box), segments_for_round(round_.index - 1))

    def advice_region(self) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """The last round's ROI as numpy (k, j, i) slices and the advice ranks in it (1..5, 0
        elsewhere); None before the first round. advice_map() is this, filled in."""
        if not self._rounds:
            return None
        with self._lock:
            round_ = self._advise(self._rounds[-1])
        return box_slices(round_.box), round_.advice_labels.copy()

    def advice_map(self) -> np.ndarray:
        """uint8 whole volume: the rank (1..5) of each suggested region, 0 elsewhere."""
        out = np.zeros(self.image.shape, np.uint8)
        if self._rounds:
            with self._lock:
                round_ = self._advise(self._rounds[-1])
            out[box_slices(round_.box)] = round_.advice_labels
        return out
