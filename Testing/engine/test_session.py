"""InteractiveSession: clicks, rounds, ROI, undo/redo, starting segments, advice."""

import numpy as np
import pytest
from mecca.errors import InputError, SessionError
from mecca.session import InteractiveSession, automatic_steps
from mecca.volume import Volume


def test_a_round_changes_only_the_roi_and_records_history(blob_volume, untrained_model):
    volume, label = blob_volume
    session = InteractiveSession(volume, untrained_model, roi=((4, 6, 2), (30, 34, 20)))
    session.add_click((18, 20, 12), positive=True)
    summary = session.step()
    assert summary["round"] == 1 and summary["clicks"] == 1
    assert summary["roi_lo_ijk"] == [4, 6, 2] and summary["roi_hi_ijk"] == [30, 34, 20]
    p = session.probability_tenths
    outside = np.ones(p.shape, bool)
    outside[2:20, 6:34, 4:30] = False
    assert (p[outside] == 5).all()  # untouched outside the ROI
    assert set(np.unique(p[~outside])) <= set(range(11))
    assert session.history[0]["changed_voxels"] == np.count_nonzero(p[~outside] != 5)
    conf = session.confidence_map()
    assert conf.shape == volume.shape and (conf[outside] == 1.0).all()
    region, roi_confidence = session.confidence_region()
    assert region == (slice(2, 20), slice(6, 34), slice(4, 30)) and np.array_equal(conf[region], roi_confidence)
    assert np.array_equal(session.mask_region(region), session.mask[region])
    assert session.clicks_by_round == [[session.clicks[0]]]
    assert ((conf[~outside] >= 0) & (conf[~outside] <= 1)).all()


def test_undo_redo_restore_exact_states_and_new_click_truncates_redo(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model)
    states = [session.probability_tenths]
    for ijk, sign in [((18, 20, 12), True), ((5, 5, 12), False), ((20, 25, 10), True)]:
        session.add_click(ijk, sign)
        session.step()
        states.append(session.probability_tenths)
    session.undo()
    assert np.array_equal(session.probability_tenths, states[2]) and len(session.clicks) == 2
    session.undo()
    assert np.array_equal(session.probability_tenths, states[1])
    session.redo()
    assert np.array_equal(session.probability_tenths, states[2]) and len(session.clicks) == 2
    session.add_click((10, 10, 10), True)
    assert not session.can_redo
    with pytest.raises(SessionError, match="nothing to redo"):
        session.redo()
    session.undo(), session.undo()
    assert np.array_equal(session.probability_tenths, states[0]) and session.clicks == []
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()


def test_roi_grows_from_clicks_with_a_margin_in_mm(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model, roi_margin_mm=5.0)
    with pytest.raises(SessionError, match="no ROI yet"):
        session.step()
    session.add_click((18, 20, 12), True)
    lo, hi = session.current_box()
    # margin 5 mm: ceil(5 / 0.8) = 7 voxels along i, ceil(5/0.9) = 6 along j, ceil(5/2.5) = 2 along k
    assert lo == (10, 14, 11) and hi == (15, 27, 26)
    session.step()
    session.add_click((30, 20, 12), True)
    lo2, hi2 = session.current_box()
    assert hi2[2] == min(30 + 1 + 7, 36) and lo2 == lo  # grows, never shrinks


def test_roi_on_a_large_volume_only_touches_the_roi(untrained_model):
    big = Volume(np.zeros((300, 512, 512), np.int16), spacing=(0.7, 0.7, 1.5))
    big.array[140:160, 240:280, 240:280] = 200
    session = InteractiveSession(big, untrained_model, roi_margin_mm=10.0)
    session.add_click((260, 260, 150), True)
    summary = session.step()
    lo, hi = summary["roi_lo_ijk"], summary["roi_hi_ijk"]
    assert all(h - l < 40 for l, h in zip(lo, hi))
    assert session.probability_tenths.nbytes == 300 * 512 * 512  # one byte per voxel for the whole volume


def test_start_from_existing_mask_keeps_it_until_a_round_runs(blob_volume, untrained_model):
    volume, label = blob_volume
    session = InteractiveSession(volume, untrained_model, initial_mask=label)
    assert np.array_equal(session.mask, label)
    session.step()  # allowed without clicks: the ROI comes from the segment
    session.undo()
    assert np.array_equal(session.mask, label)
    with pytest.raises(InputError, match="starting segment has size"):
        InteractiveSession(volume, untrained_model, initial_mask=label[:-1])


@pytest.mark.parametrize("ijk, message", [((-1, 0, 0), "outside the image"), ((36, 0, 0), "outside the image"),
                                          ((1, 2), "three finite"), ((np.nan, 1, 1), "three finite")])
def test_bad_clicks_are_refused(blob_volume, untrained_model, ijk, message):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model)
    with pytest.raises(InputError, match=message):
        session.add_click(ijk, True)


def test_click_outside_the_user_roi_is_refused(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model, roi=((0, 0, 0), (10, 10, 10)))
    with pytest.raises(InputError, match="outside the ROI"):
        session.add_click((20, 20, 20), True)


def test_advice_regions_lie_in_the_roi_ranked_by_confidence(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model, roi=((4, 6, 2), (30, 34, 20)))
    session.add_click((18, 20, 12), True)
    session.step()
    regions = session.advice_regions
    assert [r.rank for r in regions] == [1, 2, 3, 4, 5]
    assert all(a.mean_confidence <= b.mean_confidence for a, b in zip(regions, regions[1:]))
    ranks = session.advice_map()
    slices, roi_ranks = session.advice_region()
    assert np.array_equal(ranks[slices], roi_ranks) and ranks.sum() == roi_ranks.sum()
    for region in regions:
        i, j, k = region.centre
        assert 4 <= i < 30 and 6 <= j < 34 and 2 <= k < 20
        assert ranks[k, j, i] == region.rank


def test_advice_by_doubt_components_offers_the_doubtful_pieces_of_a_real_round(hippocampus_case, bundled_model_float32):
    """advice_ranking="doubt_components": each region is a connected piece of the round's voxels under
    the doubt threshold, the one with the most doubt first; the partition is what advice_supervoxels says."""
    from mecca.advice import DOUBT_BELOW
    from mecca.geometry import ijk_from_kji, label_box
    from mecca.users import SimulatedUser

    image, label = hippocampus_case
    session = InteractiveSession(image, bundled_model_float32, roi=label_box(label > 0), advice_ranking="doubt_components")
    for click in SimulatedUser(label > 0, seed=0, style="interior").clicks(session.mask > 0, 3, 0):
        session.add_click(ijk_from_kji(click.position), click.positive)
    session.step()
    regions = session.advice_regions
    assert 1 <= len(regions) <= 5
    assert all(a.doubtful_voxels >= b.doubtful_voxels for a, b in zip(regions, regions[1:]))
    slices, ranks = session.advice_region()
    _, confidence = session.confidence_region()
    _, pieces = session.advice_supervoxels()
    assert (confidence[ranks > 0] < DOUBT_BELOW).all()
    for region in regions:
        assert len(np.unique(pieces[ranks == region.rank])) == 1  # one piece each
    with pytest.raises(InputError, match="advice ranking"):
        InteractiveSession(image, bundled_model_float32, advice_ranking="largest")


def test_advice_regions_are_compact_in_millimetres_on_thick_slices(blob_volume, untrained_model):
    blob, _ = blob_volume
    volume = Volume(blob.array, spacing=(0.8, 0.9, 5.0))  # 5 mm slices
    session = InteractiveSession(volume, untrained_model, roi=((0, 0, 0), (36, 40, 24)))
    session.add_click((18, 20, 12), True)
    session.step()
    _, ranks = session.advice_region()
    for rank in range(1, 6):
        points = np.argwhere(ranks == rank)
        extent_mm = (points.max(axis=0) - points.min(axis=0) + 1) * np.array([5.0, 0.9, 0.8])
        assert extent_mm[0] <= 2 * extent_mm[1:].max(), f"region {rank} spans {extent_mm} mm (k, j, i)"


def _sample_session(model, steps_per_round, lean_correction=0.5):
    """A session on the bundled sample with the simulated user's three first clicks queued."""
    from mecca.datasets import binary_label
    from mecca.geometry import ijk_from_kji
    from mecca.io import read_volume
    from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
    from mecca.users import SimulatedUser

    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = binary_label(read_volume(resource_path(*SAMPLE_LABEL)).array)
    session = InteractiveSession(image, model, steps_per_round=steps_per_round, lean_correction=lean_correction)
    for click in SimulatedUser(label, seed=0).clicks(np.zeros(label.shape, bool), 3, 0):
        session.add_click(ijk_from_kji(click.position), click.positive)
    return session


def test_several_steps_per_round_are_one_round_of_repeated_policy_steps(bundled_model_float32):
    """Two steps in one round compute what two rounds without new clicks do (without the lean
    correction, which only later rounds take), undo as one round, and keep the confidence of their
    last step with the probabilities it moved."""
    two_steps, one_step = (_sample_session(bundled_model_float32, steps, lean_correction=0) for steps in (2, 1))
    two_steps.step()
    one_step.step()
    after_one = one_step.probability_tenths
    one_step.step()
    assert not np.array_equal(after_one, one_step.probability_tenths)  # the second step moves voxels
    assert np.array_equal(two_steps.probability_tenths, one_step.probability_tenths)
    assert len(two_steps.history) == 1 and two_steps.history[0]["changed_voxels"] > 0
    assert two_steps.history[0]["policy_steps"] == 2 and one_step.history[0]["policy_steps"] == 1
    last, second = two_steps.last_round, one_step.last_round
    assert np.array_equal(last.confidence, second.confidence)
    assert np.array_equal(last.last_step_change(), second.last_step_change())
    assert np.array_equal(second.last_step_change(), second.p_after.astype(int) - second.p_before)
    two_steps.undo()
    assert (two_steps.probability_tenths == 5).all()


def test_automatic_steps_fit_the_round_time_budget():
    """3 steps on working grids up to 80^3 voxels, 2 a little above, 1 from 96^3 (docs/performance.md)."""
    assert [automatic_steps((n, n, n)) for n in (16, 64, 80, 88, 96, 128, 512)] == [3, 3, 3, 2, 1, 1, 1]
    assert automatic_steps((300, 512, 512)) == 1


def test_automatic_steps_per_round_is_the_default_and_depends_on_the_working_grid(bundled_model_float32,
                                                                                   untrained_model):
    """The sample's ROI is enlarged to the model's 64^3 minimum: auto takes 3 steps there, bit for bit
    an explicit 3; a 100^3 ROI (worked on as it is) takes 1."""
    from mecca.volume import Volume

    automatic, three = _sample_session(bundled_model_float32, "auto"), _sample_session(bundled_model_float32, 3)
    assert automatic.steps_per_round == "auto"
    assert automatic.step()["policy_steps"] == three.step()["policy_steps"] == 3
    assert np.array_equal(automatic.probability_tenths, three.probability_tenths)
    large = InteractiveSession(Volume(np.random.default_rng(0).normal(size=(100, 100, 100)).astype(np.float32)),
                               untrained_model, roi=((0, 0, 0), (100, 100, 100)))
    large.add_click((50, 50, 50), positive=True)
    summary = large.step()
    assert summary["working_size_ijk"] == [100, 100, 100] and summary["policy_steps"] == 1


def test_a_flip_averaged_round_runs_the_policy_four_times_per_step(bundled_model_float32):
    """flip_average: four policy passes per step (the state and its three single-axis flips), the
    same step count and a different round; settable between rounds."""
    plain, averaged = _sample_session(bundled_model_float32, 2), _sample_session(bundled_model_float32, 2)
    averaged.flip_average = True
    calls = []
    hook = bundled_model_float32.policy.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert averaged.step()["policy_steps"] == 2 and len(calls) == 2 * 4
        plain.step()
    finally:
        hook.remove()
    assert len(calls) == 2 * 4 + 2
    assert not np.array_equal(plain.probability_tenths, averaged.probability_tenths)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "automatic"])
def test_steps_per_round_must_be_a_positive_whole_number_or_auto(blob_volume, untrained_model, steps):
    with pytest.raises(InputError, match="steps per round"):
        InteractiveSession(blob_volume[0], untrained_model, steps_per_round=steps)


def test_the_lean_correction_leaves_the_first_round_and_lowers_the_later_ones(bundled_model_float32):
    """Round 1 is the policy's own; from round 2 the "up" scores are lowered, so with one step per
    round and the same state no voxel ends higher than without the correction, and some end lower."""
    corrected = _sample_session(bundled_model_float32, 1)
    plain = _sample_session(bundled_model_float32, 1, lean_correction=0)
    assert corrected.lean_correction == 0.5
    corrected.step()
    plain.step()
    assert np.array_equal(corrected.probability_tenths, plain.probability_tenths)
    corrected.step()
    plain.step()
    lower = corrected.probability_tenths < plain.probability_tenths
    assert lower.any() and not (corrected.probability_tenths > plain.probability_tenths).any()
    assert [r["lean_correction"] for r in corrected.history] == [0.0, 0.5]  # the history says what each round did
    corrected.undo()
    corrected.lean_correction = 0  # settable between rounds
    corrected.step()
    assert np.array_equal(corrected.probability_tenths, plain.probability_tenths)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "0.5"])
def test_the_lean_correction_must_be_a_finite_number_of_at_least_zero(blob_volume, untrained_model, value):
    with pytest.raises(InputError, match="lean correction"):
        InteractiveSession(blob_volume[0], untrained_model, lean_correction=value)
    session = InteractiveSession(blob_volume[0], untrained_model)
    with pytest.raises(InputError, match="lean correction"):
        session.lean_correction = None
    with pytest.raises(InputError, match="lean correction"):
        session.lean_correction = value
    assert session.lean_correction == 0.5


def test_the_lean_correction_and_steps_per_round_default_to_the_model_files(blob_volume, untrained_model):
    untrained_model.metadata = {"inference": {"lean_correction": 0.25, "steps_per_round": 2}}
    session = InteractiveSession(blob_volume[0], untrained_model)
    assert session.lean_correction == 0.25 and session.steps_per_round == 2
    assert InteractiveSession(blob_volume[0], untrained_model, lean_correction=0.0).lean_correction == 0.0


@pytest.mark.parametrize("value", ["false", 0, 1, None])
def test_averaging_over_flips_is_a_yes_or_no_choice(blob_volume, untrained_model, value):
    with pytest.raises(InputError, match="averaging over flips"):
        InteractiveSession(blob_volume[0], untrained_model, flip_average=value)
    session = InteractiveSession(blob_volume[0], untrained_model, flip_average=np.bool_(True))
    assert session.flip_average is True
    with pytest.raises(InputError, match="averaging over flips"):
        session.flip_average = value
    assert session.flip_average is True


def test_a_session_makes_the_hints_its_model_was_trained_with(untrained_model):
    """The policy's hint channel is the model's ``hint_encoding`` of the session's clicks on the ROI."""
    from dataclasses import replace

    from mecca.clicks import Click
    from mecca.environment import normalize_image
    from mecca.hints import geodesic_hint_map, hint_map

    volume = Volume(np.random.default_rng(0).normal(size=(24, 40, 36)).astype(np.float32))  # 1 mm voxels
    region_image = normalize_image(volume.array[2:20, 6:34, 4:30])
    expected = {"geodesic": geodesic_hint_map(region_image, [Click((10, 14, 14), True)]),
                "gaussian": hint_map(region_image.shape, [Click((10, 14, 14), True)])}
    assert not np.allclose(expected["geodesic"], expected["gaussian"])
    for encoding, hint in expected.items():
        untrained_model.config = replace(untrained_model.config, hint_encoding=encoding, min_working_voxels=None)
        session = InteractiveSession(volume, untrained_model, roi=((4, 6, 2), (30, 34, 20)), steps_per_round=1)
        session.add_click((18, 20, 12), positive=True)
        states = []
        hook = untrained_model.policy.register_forward_pre_hook(lambda _module, args, seen=states: seen.append(args[0]))
        try:
            session.step()
        finally:
            hook.remove()
        assert np.allclose(states[0][0, 2].float().numpy(), hint, atol=1e-3), encoding


def test_a_random_walker_start_is_what_the_first_policy_step_sees_and_undo_forgets_it(blob_volume, untrained_model):
    """start_estimate="random-walker": the first round's policy input is p = 0.9 in the random walker's
    mask on the clicks (0.1 outside), the mask close to the bright blob; later rounds start from the
    session's own p; undo returns to p = 0.5; unknown estimates are refused."""
    from dataclasses import replace

    blob, label = blob_volume
    volume = Volume(blob.array)  # 1 mm voxels and no enlargement: the networks see the ROI's own voxels
    untrained_model.config = replace(untrained_model.config, min_working_voxels=None)
    session = InteractiveSession(volume, untrained_model, roi=((1, 2, 1), (35, 38, 23)), steps_per_round=1,
                                 start_estimate="random-walker")
    session.add_click((18, 20, 12), positive=True)
    seen = []
    hook = untrained_model.policy.register_forward_pre_hook(lambda _module, args: seen.append(args[0][0, 1].float()))
    try:
        session.step()
        session.add_click((3, 4, 3), positive=False)
        session.step()
    finally:
        hook.remove()
    first = seen[0].numpy()
    assert np.allclose(np.unique(first), [0.1, 0.9])
    inside, truth = first > 0.5, label[1:23, 2:38, 1:35] > 0
    assert 2 * np.count_nonzero(inside & truth) / (np.count_nonzero(inside) + np.count_nonzero(truth)) > 0.9
    region = (slice(1, 23), slice(2, 38), slice(1, 35))
    session.undo()
    assert np.allclose(seen[1].numpy(), session.probability_tenths[region] / 10.0)  # round 2 started from round 1
    session.redo()
    assert session.history[0]["timings"]["start_estimate_s"] > 0 and "start_estimate_s" not in session.history[1]["timings"]
    session.undo(), session.undo()
    assert (session.probability_tenths[region] == 5).all()
    with pytest.raises(InputError, match="start estimate"):
        InteractiveSession(volume, untrained_model, start_estimate="grow")


def test_clicks_not_followed_counts_clicks_left_on_the_wrong_side(blob_volume, untrained_model):
    volume, _ = blob_volume
    session = InteractiveSession(volume, untrained_model, roi=((4, 6, 2), (30, 34, 20)))
    for ijk, positive in (((18, 20, 12), True), ((6, 8, 4), False), ((10, 10, 10), True)):
        session.add_click(ijk, positive)
    assert session.clicks_not_followed == 0  # pending clicks are not judged before their round
    session.step()
    mask = session.mask
    expected = sum(int(mask[ijk[::-1]] != positive) for ijk, positive in
                   (((18, 20, 12), True), ((6, 8, 4), False), ((10, 10, 10), True)))
    assert session.clicks_not_followed == expected and expected > 0  # an untrained model ignores some
    session.undo()
    assert session.clicks_not_followed == 0


def test_a_rounds_timed_parts_cover_the_work_and_fit_inside_the_round(blob_volume, untrained_model):
    """The parts a benchmark reports (docs/performance.md) name every stage, including the copies
    back to the host, and do not overlap: on a GPU each is timed to the end of its kernels."""
    image, _ = blob_volume
    session = InteractiveSession(image, untrained_model)
    session.add_click((18, 20, 12), positive=True)
    summary = session.step()
    timings = session.history[0]["timings"]
    assert {"prepare_s", "hint_s", "policy_s", "transition_s", "confidence_s", "to_host_s"} <= set(timings)
    assert sum(timings.values()) <= summary["seconds"]
