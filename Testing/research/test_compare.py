"""`python -m research.compare` end to end on real hippocampus cases: every method under the same
simulated user (DeepIGeoS, BS-IRIS, P-Net and U-Net from untrained model files made here), the JSON
schema of the evaluation issue, the figure, and a broken case reported and skipped; `mecca evaluate`
on MECCA model files alone."""

import json

import numpy as np
import pytest
import torch
from helpers import copy_msd_cases
from mecca.checkpoint import save_model
from mecca.cli import main as mecca
from mecca.networks import MeccaModel, NetworkConfig

from research.baselines.automatic import ARCHITECTURES, build, save_automatic
from research.baselines.intercnn import InterCNN, save_intercnn
from research.compare import BASELINE_COMMANDS, MODELS, main
from research.compare import NAMES as METHODS

ROUNDS = 2


@pytest.fixture(scope="module")
def evaluation(hippocampus_dir, tmp_path_factory):
    root = copy_msd_cases(hippocampus_dir, tmp_path_factory.mktemp("evaluate_msd"), 3)
    manifest = json.loads((root / "dataset.json").read_text())
    broken = root / manifest["training"][2]["image"]
    broken.write_bytes(b"not an image")
    out = root.parent / "result.json"
    torch.manual_seed(0)
    geodesic, small = NetworkConfig(width=8, hint_encoding="geodesic"), NetworkConfig(width=8)
    bs_iris = save_model(MeccaModel.create(NetworkConfig(width=8, hint_encoding="supervoxel")),
                         root.parent / "bs-iris.safetensors", {"training": {"config": {"boundary_reward": 1.0}}})
    untrained = [f"--deepigeos-model={save_intercnn(InterCNN(geodesic), geodesic, root.parent / 'deepigeos.safetensors')}",
                 *(f"--{a}-model={save_automatic(build(a, small), a, small, root.parent / f'{a}.safetensors')}"
                   for a in ARCHITECTURES),
                 f"--bs-iris-model={bs_iris}"]
    assert main(["--dataset", str(root), "--split", "all", "--rounds", str(ROUNDS), *untrained,
                 "--methods", ",".join(METHODS), "--json", str(out), "--plot", str(root.parent / "result.png")]) == 0
    return json.loads(out.read_text()), root, broken.name


def test_every_method_reports_the_issue_schema(evaluation):
    result, _, _ = evaluation
    assert result["rounds"] == ROUNDS and result["clicks_per_round"] == 3 and result["cases"] == 3
    assert set(result["methods"]) == set(METHODS)
    for name, method in result["methods"].items():
        assert method["cases"] == 2, name  # the broken case is skipped for every method
        for key in ("dice_mean_per_round", "dice_sd_per_round", "assd_mm_mean_per_round",
                    "misunderstanding_rate_per_round"):
            assert len(method[key]) == ROUNDS, (name, key)
        assert all(0.0 <= d <= 1.0 for d in method["dice_mean_per_round"])
        assert all(0.0 <= m <= 1.0 for m in method["misunderstanding_rate_per_round"])
        assert method["seconds_per_round_median"] > 0
        assert [len(case["dice_per_round"]) for case in method["per_case"]] == [ROUNDS, ROUNDS]
        per_case_mean = np.mean([case["dice_per_round"] for case in method["per_case"]], axis=0)
        assert np.allclose(per_case_mean, method["dice_mean_per_round"], atol=1e-4)


def test_the_bundled_models_segment_and_only_mecca_types_report_eq6_label_quality(evaluation):
    result, _, _ = evaluation
    for name in ("mecca", "iter-mrl"):
        method = result["methods"][name]
        assert len(method["simulated_label_accuracy_per_round"]) == ROUNDS
        assert all(0.0 <= c <= 1.0 for c in method["simulated_label_coverage_per_round"])
        assert len(method["simulated_label_foreground_recall_per_round"]) == ROUNDS
        assert len(method["confidence_auc_per_round"]) == ROUNDS
    for name in ("intercnn", "deepigeos", "p-net", "u-net", "grow-from-seeds", "random-walker"):
        assert "simulated_label_accuracy_per_round" not in result["methods"][name]
    assert result["methods"]["mecca"]["dice_mean_per_round"][-1] > 0.5  # a trained model, not noise


def test_a_broken_case_is_reported_and_the_figure_written(evaluation):
    result, root, broken = evaluation
    assert [f["method"] for f in result["failures"]] == [None]
    assert "cannot be read" in result["failures"][0]["error"] and broken in result["failures"][0]["error"]
    assert (root.parent / "result.png").stat().st_size > 10_000


def test_steps_per_round_reach_the_mecca_sessions_and_zero_is_refused(evaluation, capsys):
    result, root, _ = evaluation
    command = ["--dataset", str(root), "--split", "all", "--rounds", "1", "--methods", "mecca",
               "--steps-per-round"]
    first_round = {}
    for steps in ("1", "2"):
        out = root.parent / f"steps-{steps}.json"
        assert main([*command, steps, "--json", str(out)]) == 0
        recorded = json.loads(out.read_text())
        assert recorded["steps_per_round"] == int(steps)
        first_round[steps] = [case["dice_per_round"][0] for case in recorded["methods"]["mecca"]["per_case"]]
    assert first_round["1"] != first_round["2"]
    assert result["steps_per_round"] is None  # the model file's default ('auto': 3 steps on these small ROIs)
    assert [case["dice_per_round"][0] for case in result["methods"]["mecca"]["per_case"]] not in first_round.values()
    for bad, message in (("0", "must be at least 1, got 0"), ("1.5", "must be a whole number or 'auto', got '1.5'")):
        with pytest.raises(SystemExit):
            main([*command, bad])
        assert f"--steps-per-round: {message}" in capsys.readouterr().err


def test_flip_average_reaches_the_mecca_sessions(evaluation):
    result, root, _ = evaluation
    out = root.parent / "flips.json"
    assert main(["--dataset", str(root), "--split", "all", "--rounds", "1", "--methods", "mecca",
                 "--flip-average", "--json", str(out)]) == 0
    recorded = json.loads(out.read_text())
    assert recorded["flip_average"] is True and result["flip_average"] is False
    first_round = [case["dice_per_round"][0] for case in recorded["methods"]["mecca"]["per_case"]]
    assert first_round != [case["dice_per_round"][0] for case in result["methods"]["mecca"]["per_case"]]


def test_the_lean_correction_reaches_the_mecca_sessions_from_round_two(evaluation):
    """`--lean-correction 0` on real cases: round 1 as with the default correction, round 2 not."""
    result, root, _ = evaluation
    out = root.parent / "no-lean.json"
    assert main(["--dataset", str(root), "--split", "all", "--rounds", str(ROUNDS), "--methods", "mecca",
                 "--lean-correction", "0", "--json", str(out)]) == 0
    recorded = json.loads(out.read_text())
    assert recorded["lean_correction"] == 0.0 and result["lean_correction"] is None  # the model's 0.5
    plain, corrected = (np.array([case["dice_per_round"] for case in r["methods"]["mecca"]["per_case"]])
                        for r in (recorded, result))
    assert np.array_equal(plain[:, 0], corrected[:, 0]) and not np.array_equal(plain[:, 1], corrected[:, 1])


def test_the_random_walker_beta_is_chosen_on_training_cases_and_recorded(evaluation):
    from research.baselines.seeded_tools import RANDOM_WALKER_BETAS

    result, _, _ = evaluation
    walker = result["models"]["random-walker"]
    assert set(walker["tuning_mean_dice"]) == {str(b) for b in RANDOM_WALKER_BETAS}
    assert walker["beta"] == max(RANDOM_WALKER_BETAS, key=lambda b: walker["tuning_mean_dice"][str(b)])


def test_interior_clicks_reach_every_method_and_other_users_are_refused(evaluation, capsys):
    result, root, _ = evaluation
    out = root.parent / "interior.json"
    assert main(["--dataset", str(root), "--split", "all", "--rounds", "1", "--methods",
                 "mecca,random-walker", "--user", "interior", "--random-walker-beta", "1000", "--json", str(out)]) == 0
    recorded = json.loads(out.read_text())
    assert recorded["user"] == "interior" and result["user"] == "edge"
    assert recorded["models"]["random-walker"] == {"beta": 1000.0, "tuning_mean_dice": None}
    for name in ("mecca", "random-walker"):
        interior = [case["dice_per_round"][0] for case in recorded["methods"][name]["per_case"]]
        assert interior != [case["dice_per_round"][0] for case in result["methods"][name]["per_case"]], name
    for option, bad in (("--user", "center"), ("--random-walker-beta", "-3")):
        with pytest.raises(SystemExit):
            main(["--dataset", str(root), "--json", str(out), option, bad])
        assert option in capsys.readouterr().err


def test_mecca_evaluate_scores_model_files_by_name(evaluation, tmp_path):
    """The product's `mecca evaluate`: the bundled model (or those given), each named by its file."""
    from mecca.resources import DEFAULT_MODEL, resource_path

    _, root, _ = evaluation
    out = tmp_path / "models.json"
    bundled = resource_path(*DEFAULT_MODEL)
    assert mecca(["evaluate", "--dataset", str(root), "--split", "all", "--rounds", "1", "--json", str(out),
                  "--model", str(bundled), "--model", str(bundled)]) == 0
    result = json.loads(out.read_text())
    assert list(result["methods"]) == ["mecca", "mecca (2)"] and result["methods"]["mecca"]["cases"] == 2
    assert result["methods"]["mecca"]["dice_mean_per_round"] == result["methods"]["mecca (2)"]["dice_mean_per_round"]


def test_the_paired_test_pairs_cases_by_name_and_finds_a_consistent_lead():
    from research.compare import paired_tests

    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, (12, 2))
    cases = [f"case_{n}" for n in range(12)]
    result = {"methods": {
        "mecca": {"cases": 12, "per_case": [{"case": c, "dice_per_round": list(d + 0.05)} for c, d in zip(cases, base)]},
        "other": {"cases": 12, "per_case": [{"case": c, "dice_per_round": list(d)} for c, d in zip(cases[::-1], base[::-1])]},
        "same": {"cases": 12, "per_case": [{"case": c, "dice_per_round": list(d + 0.05)} for c, d in zip(cases, base)]}}}
    tests = paired_tests(result)
    assert tests["other"]["cases"] == 12 and all(p < 0.01 for p in tests["other"]["p_per_round"])
    assert tests["same"]["p_per_round"] == [1.0, 1.0]


def test_a_missing_or_wrong_baseline_model_names_the_command_that_makes_it(evaluation, capsys):
    """Asked for by name, a missing model file is an error; a model trained with other hints is refused
    (InterCNN's file given as DeepIGeoS); both messages give the training command."""
    _, root, _ = evaluation
    command = ["--dataset", str(root), "--split", "all", "--rounds", "1", "--json", str(root.parent / "x.json")]
    assert main([*command, "--methods", "deepigeos", "--deepigeos-model", str(root / "none.safetensors")]) == 2
    assert f"no deepigeos model at {root / 'none.safetensors'}; make it with: {BASELINE_COMMANDS['deepigeos']}" \
        in capsys.readouterr().err
    assert main([*command, "--methods", "deepigeos", "--deepigeos-model", str(MODELS / "intercnn.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "an InterCNN with gaussian hint maps, not geodesic ones" in error and BASELINE_COMMANDS["deepigeos"] in error

