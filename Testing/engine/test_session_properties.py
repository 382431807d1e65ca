"""Property-based tests of InteractiveSession: any sequence of clicks, rounds, undo, redo and ROI
changes keeps the probability in tenths 0..10 and the image untouched, undo and redo restore exact
states, and the only errors are the documented ones, raised exactly when the state calls for them."""

from __future__ import annotations

from functools import cache

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mecca.errors import InputError, SessionError
from mecca.geometry import ijk_from_kji
from mecca.networks import MeccaModel, NetworkConfig
from mecca.session import InteractiveSession
from mecca.volume import Volume

SHAPE_KJI = (10, 14, 12)
SIZE_IJK = SHAPE_KJI[::-1]


@cache
def _model() -> MeccaModel:
    return MeccaModel.create(NetworkConfig(width=8, confidence_width=8), seed=0).eval()


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:SHAPE_KJI[0], :SHAPE_KJI[1], :SHAPE_KJI[2]]
    blob = ((k - 5) / 3.0) ** 2 + ((j - 7) / 4.0) ** 2 + ((i - 6) / 4.0) ** 2 <= 1
    image = (blob * 100 + rng.normal(0, 10, SHAPE_KJI)).astype(np.int16)
    return Volume(image, spacing=(1.2, 0.9, 3.0), origin=(4.0, -7.0, 1.5), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))


# indices a little beyond the image on both sides, so clicks and ROIs also fall outside
index = st.tuples(*(st.integers(-3, size + 2) for size in SIZE_IJK))


def _inside(ijk, lo, hi) -> bool:
    return all(a <= v < b for v, a, b in zip(ijk, lo, hi))


class SessionMachine(RuleBasedStateMachine):
    """Keeps its own record of what the session should hold: the probability after each round
    (``done``), the undone rounds' results (``undone``), the clicks not yet run and the user ROI."""

    def __init__(self):
        super().__init__()
        self.volume = _volume()
        self.original = self.volume.array.copy()
        self.geometry = (self.volume.spacing, self.volume.origin, self.volume.direction)
        self.session = InteractiveSession(self.volume, _model(), roi_margin_mm=4.0)
        self.start = self.session.probability_tenths
        self.done: list[np.ndarray] = []
        self.undone: list[np.ndarray] = []
        self.pending = 0
        self.roi = None  # (lo, hi) in (i, j, k), clipped to the image

    @property
    def current(self) -> np.ndarray:
        return self.done[-1] if self.done else self.start

    @rule(ijk=index, positive=st.booleans())
    def add_click(self, ijk, positive):
        in_image = _inside(ijk, (0, 0, 0), SIZE_IJK)
        in_roi = self.roi is None or _inside(ijk, *self.roi)
        try:
            self.session.add_click(ijk, positive)
        except InputError as error:
            assert not (in_image and in_roi), error
            return
        assert in_image and in_roi
        self.pending += 1
        self.undone.clear()  # a new click ends the redo history

    @rule()
    def step(self):
        try:
            summary = self.session.step()
        except SessionError as error:
            assert self.roi is None and not self.done and not self.pending, error
            return
        assert 0 < summary["clicks"] <= self.pending or summary["clicks"] == self.pending == 0
        self.pending = 0
        self.done.append(self.session.probability_tenths)
        self.undone.clear()

    @rule()
    def undo(self):
        try:
            self.session.undo()
        except SessionError as error:
            assert not self.done, error
            return
        self.undone.append(self.done.pop())
        self.pending = 0  # undo also drops the clicks not yet run
        assert np.array_equal(self.session.probability_tenths, self.current)

    @rule()
    def redo(self):
        try:
            self.session.redo()
        except SessionError as error:
            assert not self.undone, error
            return
        self.done.append(self.undone.pop())
        assert np.array_equal(self.session.probability_tenths, self.current)

    @precondition(lambda self: self.done)
    @rule()
    def undo_then_redo_is_the_same_state(self):
        before = self.session.probability_tenths
        self.session.undo()
        self.session.redo()
        assert np.array_equal(self.session.probability_tenths, before)
        self.pending = 0

    @rule(lo=index, size=st.tuples(*(st.integers(-1, size) for size in SIZE_IJK)))
    def set_roi(self, lo, size):
        hi = tuple(a + b for a, b in zip(lo, size))
        clipped_lo = tuple(min(max(v, 0), s) for v, s in zip(lo, SIZE_IJK))
        clipped_hi = tuple(min(max(v, 0), s) for v, s in zip(hi, SIZE_IJK))
        overlaps = all(a < b for a, b in zip(clipped_lo, clipped_hi))
        try:
            self.session.set_roi(lo, hi)
        except InputError as error:
            # an empty box is refused; a box leaving out a queued click may be (see test_robustness)
            assert not overlaps or any(not _inside(ijk_from_kji(c.position), clipped_lo, clipped_hi)
                                       for c in self.session.pending_clicks), error
            return
        assert overlaps
        self.roi = (clipped_lo, clipped_hi)

    @rule()
    def clear_roi(self):
        self.session.clear_roi()
        self.roi = None

    @invariant()
    def probability_is_in_tenths_on_the_image_grid(self):
        p = self.session.probability_tenths
        assert p.dtype == np.uint8 and p.shape == SHAPE_KJI and p.max() <= 10
        assert np.array_equal(p, self.current)
        assert np.array_equal(self.session.mask, (p > 5).astype(np.uint8))
        assert self.session.rounds == len(self.done)
        assert self.session.can_undo == bool(self.done) and self.session.can_redo == bool(self.undone)

    @invariant()
    def confidence_is_a_probability(self):
        confidence = self.session.confidence_map()
        assert confidence.shape == SHAPE_KJI and np.isfinite(confidence).all()
        assert confidence.min() >= 0 and confidence.max() <= 1

    @invariant()
    def the_image_and_its_geometry_never_change(self):
        assert self.session.image is self.volume and np.array_equal(self.volume.array, self.original)
        assert (self.volume.spacing, self.volume.origin, self.volume.direction) == self.geometry


SessionMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_session_state_machine = SessionMachine.TestCase
