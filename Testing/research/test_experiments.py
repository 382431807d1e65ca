"""The README's commands are the ones CI runs, its figures are the ones the model file records, and
the experiment scripts behind its figures do what research/NOTEBOOK.md says."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands(text: str) -> list[str]:
    blocks = text.split("```")[1::2]
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("python3 -m venv")]


def _results_script(name: str):
    """A script of research/experiments/ (a package: it imports its neighbours, e.g. held_out)."""
    import importlib

    return importlib.import_module(f"research.experiments.{name}")


def test_ci_runs_the_readme_test_command():
    commands = _commands((ROOT / "README.md").read_text())
    assert len(commands) == 2 and commands[0].endswith("mecca demo") and commands[1].endswith("python -m pytest -q")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_the_intensity_changes_behind_the_readme_figures_are_what_results_md_says():
    """research/experiments/intensity_changes.py on the bundled (real) scan: inverted = 1 - u, gamma 2 = u²,
    the bias field spans 0.3-1.7 times u, the noise repeats with its seed, unknown names are refused."""
    import numpy as np
    import pytest
    from mecca.io import read_volume
    from mecca.resources import SAMPLE_IMAGE, resource_path

    module = _results_script("intensity_changes")
    array = read_volume(str(resource_path(*SAMPLE_IMAGE))).array
    low, high = np.percentile(array, [0.5, 99.5])
    unit = np.clip((array - low) / (high - low), 0, 1)
    assert np.allclose(module.changed(array, "none", 0), array)
    assert np.allclose(module.changed(array, "inverted", 0), 1 - unit, atol=1e-6)
    assert np.allclose(module.changed(array, "gamma 2", 0), unit**2, atol=1e-6)
    ratio = module.changed(array, "bias field", 0)[unit > 0.1] / unit[unit > 0.1]
    assert 0.3 - 1e-5 <= ratio.min() < 0.5 and 1.5 < ratio.max() <= 1.7 + 1e-5
    noisy = module.changed(array, "noise", 3)
    assert np.array_equal(noisy, module.changed(array, "noise", 3)) and abs(float((noisy - unit).std()) - 0.1) < 0.01
    with pytest.raises(ValueError, match="unknown change"):
        module.changed(array, "blur", 0)


def test_the_weight_average_in_results_md_is_the_mean_of_the_models_weights(tmp_path):
    """research/experiments/weight_average.py: each weight the mean of the models' (two seeds here), the record
    names the models averaged, and models of another architecture are refused."""
    from dataclasses import replace

    import pytest
    import torch
    from mecca.checkpoint import load_model, save_model
    from mecca.networks import MeccaModel, NetworkConfig

    module = _results_script("weight_average")
    paths = [str(save_model(MeccaModel.create(seed=seed), tmp_path / f"seed{seed}.safetensors")) for seed in (0, 1)]
    averaged = module.average(paths)
    first, second = (load_model(path).state_dict() for path in paths)
    assert not torch.equal(first["policy.trunk.stem.weight"], second["policy.trunk.stem.weight"])
    for name, value in averaged.state_dict().items():
        assert torch.allclose(value, (first[name] + second[name]) / 2, atol=1e-7), name
    assert averaged.metadata["weight_average_of"] == paths
    wider = save_model(MeccaModel.create(replace(NetworkConfig(), width=8)), tmp_path / "width8.safetensors")
    with pytest.raises(ValueError, match="another architecture"):
        module.average([paths[0], str(wider)])


def _bundled_metadata() -> dict:
    import pytest
    from mecca.checkpoint import read_model_file
    from mecca.resources import DEFAULT_MODEL, resource_path

    try:
        return read_model_file(resource_path(*DEFAULT_MODEL))[1]
    except FileNotFoundError:
        pytest.skip("the bundled model is not there")


def test_the_model_card_is_the_one_mecca_info_prints_from_the_model_file():
    from mecca.checkpoint import load_model
    from mecca.report import model_card
    from mecca.resources import DEFAULT_MODEL, resource_path

    metadata = _bundled_metadata()
    model = load_model(resource_path(*DEFAULT_MODEL))
    card = (ROOT / "Resources" / "Models" / "MODEL_CARD.md").read_text()
    assert card.startswith(model_card(resource_path(*DEFAULT_MODEL), model.metadata, model.config.to_dict()))
    assert len(metadata["lineage"]) >= 7 and metadata["training"]["data"]["init"] == f"stage {len(metadata['lineage'])}"
    assert len(metadata["weight_average_of"]) == 2 and "Weights: the mean of the weights" in card


def test_the_readme_and_results_quote_the_evaluations_recorded_in_the_model_file():
    """One source for the figures: every round-5 Dice the model file records is what the README and
    docs/results.md print, under both simulated users, and the results JSON agrees."""
    import json

    evaluations = _bundled_metadata()["metrics"]["evaluations"]
    assert {(e["dataset"], e["user"]) for e in evaluations} >= {(d, u) for d in ("Hippocampus", "LeftAtrium2018")
                                                                for u in ("edge", "interior")}
    readme, results = (ROOT / "README.md").read_text(), (ROOT / "docs" / "results.md").read_text()
    stored = [json.loads(path.read_text()).get("methods", {}).get("mecca", {}).get("dice_mean_per_round")
              for path in (ROOT / "research" / "results").glob("*.json")]
    for e in evaluations:
        figure = f"{e['dice_mean_per_round'][-1]:.3f}"
        assert figure in readme and figure in results, (e["dataset"], e["user"], figure)
        assert e["dice_mean_per_round"] in stored, (e["dataset"], e["user"])  # a results file holds the run


def test_every_research_recipe_is_a_valid_training_recipe():
    from mecca.recipe import read_recipe, resolve_recipe

    recipes = sorted((ROOT / "research" / "recipes").glob("*.json"))
    assert recipes
    for path in recipes:
        config, network, inference = resolve_recipe(read_recipe(path))
        assert config.epochs >= 1 and network.width >= 1, path.name


def _sample_round():
    """The bundled model's session on the bundled sample (ROI = the label's box) after one round of the
    whole-ROI user's click: (interaction_guide, model, image, label, box, session)."""
    import pytest
    from mecca import load_model, read_volume
    from mecca.geometry import ijk_from_kji, kji_from_ijk, label_box
    from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path
    from mecca.session import InteractiveSession

    guide = _results_script("interaction_guide")
    try:
        model = load_model(precision="float32")
    except FileNotFoundError:
        pytest.skip("the bundled model is not there")
    image = read_volume(resource_path(*SAMPLE_IMAGE))
    label = read_volume(resource_path(*SAMPLE_LABEL)).array > 0
    lo, hi = label_box(label)
    box = (kji_from_ijk(lo), kji_from_ijk(hi))
    session = InteractiveSession(image, model, roi=(lo, hi))
    click, position = guide.next_click(session, label, box, guided=True)  # no round yet: the whole ROI
    session.add_click(ijk_from_kji(position), click.positive)
    session.step()
    return guide, model, image, label, box, session


def test_the_guided_user_clicks_inside_the_first_advice_region_that_holds_an_error():
    """research.experiments.interaction_guide on the bundled sample with the bundled model: after a
    round, the guided click lies in an advice region and on an error; the whole-ROI click on the
    deepest error, not necessarily in a region; the curves are Dice per click."""
    import numpy as np

    guide, model, image, label, box, session = _sample_round()
    advice = session.advice_map()
    click, position = guide.next_click(session, label, box, guided=True)
    assert advice[position] > 0 and label[position] != (session.mask[position] > 0)
    assert click.positive == bool(label[position])
    ranks_with_errors = [r for r in range(1, 6) if ((advice == r) & (label != (session.mask > 0))).any()]
    assert advice[position] == ranks_with_errors[0]
    curve = guide.case_curve(model, image, label, 3, True, 0.5)
    assert len(curve) == 3 and all(0.0 <= d <= 1.0 for d in curve)
    assert curve != guide.case_curve(model, image, label, 3, False, 0.5)
    assert np.isfinite(curve).all()


def test_the_largest_piece_guided_user_and_the_guides_figures_on_a_real_round():
    """interaction_guide --rule largest clicks inside the advice regions, on the deepest point of the
    largest error piece there; advice_guides' figures are shares, the advice regions hold an error
    where random ones may not, and the doubt pieces are the session's own (advice.doubt_pieces)."""
    import numpy as np
    from scipy import ndimage

    guide, model, image, label, box, session = _sample_round()
    guides = _results_script("advice_guides")
    advice = session.advice_map()
    click, position = guide.next_click(session, label, box, guided=True, rule="largest")
    errors_inside = (advice > 0) & (label != (session.mask > 0))
    pieces, _ = ndimage.label(errors_inside)
    sizes = np.bincount(pieces.ravel())[1:]
    assert errors_inside[position] and sizes[pieces[position] - 1] == sizes.max()
    figures = guides.case_figures(model, image, label, 0.5, seed=0, doubt_below=0.85)
    assert set(figures) == set(guides.GUIDES) and all(len(rounds) == guides.ROUNDS for rounds in figures.values())
    for rounds in figures.values():
        assert all(0.0 <= value <= 1.0 for r in rounds for value in r.values())
    assert figures["mean"][0]["regions_with_an_error"] == 1.0


def test_the_deepest_rule_clicks_the_error_voxel_inside_the_regions_that_lies_deepest_in_its_error():
    """interaction_guide --rule deepest: inside the advice regions, on an error, at the greatest depth
    (distance to the error's border, measured in the whole error) any error voxel inside them has;
    the sign is the error's."""
    import numpy as np
    from mecca.geometry import box_slices
    from scipy import ndimage

    guide, _, _, label, box, session = _sample_round()
    click, position = guide.next_click(session, label, box, guided=True, rule="deepest")
    region = box_slices(box)
    errors = label[region] != (session.mask[region] > 0)
    inside = errors & (session.advice_map()[region] > 0)
    depth = ndimage.distance_transform_edt(np.pad(errors, 1))[1:-1, 1:-1, 1:-1]
    local = tuple(p - lo for p, lo in zip(position, box[0]))
    assert inside[local] and depth[local] == depth[inside].max()
    assert click.positive == bool(label[position])


def test_a_result_records_the_command_as_typed(tmp_path):
    """A module run with -m (as `python -m research.compare ...`) is recorded as such, not as the
    file name python sees."""
    import os
    import subprocess
    import sys

    (tmp_path / "probe.py").write_text("from mecca.provenance import command_line\nprint(command_line())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "MECCASegment"), str(tmp_path)])}
    out = subprocess.run([sys.executable, "-m", "probe", "--json", "out.json"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "python -m probe --json out.json"


def test_packed_cases_are_the_training_split_as_training_sees_it(hippocampus_dir, tmp_path):
    """What a GPU machine without SimpleITK trains on (research.experiments.packed): the cases
    mecca train would hold, labels exact, images equal after the crop normalisation up to the
    8-bit quantisation; held-out cases exactly as read."""
    import numpy as np
    from helpers import copy_msd_cases
    from mecca.cases import load_cases
    from mecca.environment import normalize_image
    from mecca.networks import NetworkConfig

    packed = _results_script("packed")
    dataset = copy_msd_cases(hippocampus_dir, tmp_path / "msd", 5)
    grid = NetworkConfig().min_working_voxels
    path = packed.pack([str(dataset)], str(tmp_path / "cases.npz"), 0.4, grid, validation_cases=1)
    train, validation, _ = load_cases([str(dataset)], None, 0.4, progress=False, min_working_voxels=grid)
    cases, record = packed.unpack(str(path))
    assert [c.name for c in cases] == [c.name for c in train] and record["validation_fraction"] == 0.4
    for case, original in zip(cases, train):
        assert np.array_equal(case.label, original.label) and case.image.spacing == original.image.spacing
        assert np.abs(normalize_image(case.image.array) - normalize_image(original.image.array)).max() < 0.1
    held_out = packed.unpack_validation(str(path))
    assert [c.name for c in held_out] == [validation[0].name]
    assert np.array_equal(held_out[0].image.array, validation[0].image.array)
    assert packed.unpack(str(path), ["Hippocampus"])[0] and packed.unpack_sample(str(path))[1].any()


def test_a_packed_split_trains_where_simpleitk_is_missing_and_scores_the_same_twice(hippocampus_dir, tmp_path):
    """The GPU machine's path: ``packed train`` runs mecca train on the packed cases in a process
    that cannot import SimpleITK and writes a model with its record; ``packed spread`` gives a
    case's Dice per round under both users, the same on every run of one machine."""
    import os
    import subprocess
    import sys

    from helpers import copy_msd_cases
    from mecca.checkpoint import load_model
    from mecca.networks import NetworkConfig

    packed = _results_script("packed")
    dataset = copy_msd_cases(hippocampus_dir, tmp_path / "msd", 4)
    cases = packed.pack([str(dataset)], str(tmp_path / "cases.npz"), 0.25, NetworkConfig().min_working_voxels,
                        validation_cases=1)
    recipe = tmp_path / "small.json"
    recipe.write_text(json.dumps({"network": {"width": 8, "confidence_width": 8}}))
    script = "import sys, runpy; sys.modules['SimpleITK'] = None; sys.argv = sys.argv[1:]; " \
             "runpy.run_module('research.experiments.packed', run_name='__main__')"
    out = tmp_path / "run" / "m.safetensors"
    done = subprocess.run([sys.executable, "-c", script, "packed", "train", "--cases", str(cases), "--out", str(out),
                           "--epochs", "1", "--config", str(recipe)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    record = load_model(out).metadata["training"]
    assert record["data"]["packed_from"] == str(cases) and record["history"][0]["epoch"] == 1

    def spread(name):
        packed.main(["spread", "--cases", str(cases), "--json", str(tmp_path / name), "--precision", "float32"])
        return json.loads((tmp_path / name).read_text())["users"]

    first = spread("a.json")
    assert set(first) == {"edge", "interior"} and all(len(dice) == 5 for dice in first["edge"].values())
    assert spread("b.json") == first


def test_made_structures_are_objects_of_the_scans_that_are_not_the_label_in_a_dataset_mecca_opens(
        hippocampus_dir, tmp_path):
    """research.experiments.made_structures: one supervoxel or intensity object per held-out scan,
    the same with the same seed, an MSD folder that mecca's dataset reader opens; an existing folder
    and --cases 0 are refused before anything is written."""
    import numpy as np
    import pytest
    from helpers import copy_msd_cases
    from mecca.datasets import MSDDataset

    made = _results_script("made_structures")
    source = copy_msd_cases(hippocampus_dir, tmp_path / "msd", 10)
    for name in ("a", "b"):
        made.main([str(source), str(tmp_path / name)])
    first, again = MSDDataset.open(tmp_path / "a"), MSDDataset.open(tmp_path / "b")
    originals = {c.name: c for c in MSDDataset.open(source).validation_cases(0.2)}
    assert [c.name for c in first.cases] == sorted(originals) and len(first.cases) == 2
    for case, twin in zip(first.cases, again.cases):
        image, mask = case.load()
        original_image, label = originals[case.name].load()
        assert np.array_equal(image.array, original_image.array) and mask.sum() >= 150
        assert not np.array_equal(mask, label) and np.array_equal(mask, twin.load()[1])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    for arguments in ([str(source), str(tmp_path / "a")], [str(source), str(tmp_path / "c"), "--cases", "0"]):
        with pytest.raises(SystemExit):
            made.main(arguments)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == before  # nothing rewritten
    assert not (tmp_path / "c").exists()


def test_the_new_structure_proxy_fine_tunes_on_training_patients_with_the_structure_alone(head_neck_ct_dir, tmp_path):
    """research/experiments/new_structure.py writes, as the panel exports one segment, binary masks of
    the one organ from patients `mecca train` trains on (never a validation patient), on their images."""
    import numpy as np
    from mecca.datasets import MSDDataset
    from mecca.io import read_volume

    module = _results_script("new_structure")
    dataset = MSDDataset.open(head_neck_ct_dir)
    names = module.write_fine_tuning_cases(dataset, 7, 2, tmp_path / "cases")
    written = MSDDataset.open(tmp_path / "cases")
    assert [c.name for c in written.cases] == names and len(names) == 2
    assert not set(names) & {c.name for c in dataset.validation_cases(0.2)}
    for case in written.cases:
        source = next(c for c in dataset.cases if c.name == case.name)
        image, label = case.load()
        assert set(np.unique(label)) == {0, 1}
        assert np.array_equal(label, read_volume(source.label).array == 7)
        assert np.array_equal(image.array, read_volume(source.image).array)


def test_the_new_structure_proxy_writes_interactive_cases_as_the_panel_exports_them(hippocampus_dir, tmp_path):
    """--interactive-cases: the next training patients holding the structure, not the labelled ones,
    as an unlabelled MSD folder that mecca train accepts (images and RAS clicks by round, no label);
    the clicks, read back, are the interior user's on the structure: 5 rounds of 3, each on the
    label when positive and off it when negative."""
    import numpy as np
    from mecca.clicks import read_clicks
    from mecca.datasets import MSDDataset, check_dataset
    from mecca.resources import DEFAULT_MODEL, resource_path

    module = _results_script("new_structure")
    dataset = MSDDataset.open(hippocampus_dir)
    labelled = module.write_fine_tuning_cases(dataset, 1, 1, tmp_path / "cases")
    names = module.write_interactive_cases(dataset, 1, labelled, 1, tmp_path / "interactive",
                                           resource_path(*DEFAULT_MODEL))
    assert len(names) == 1 and names[0] not in labelled
    written = MSDDataset.open(tmp_path / "interactive", require_labels=False)
    usable, problems = check_dataset(written, require_labels=False)
    assert not problems and len(usable) == 1 and usable[0].label is None
    image, _ = usable[0].load()
    label = next(c for c in dataset.cases if c.name == names[0]).load((1,))[1] > 0
    rounds, _ = read_clicks(usable[0].clicks, image)
    assert sorted(rounds) == [1, 2, 3, 4, 5] and all(len(clicks) <= 3 for clicks in rounds.values())
    for clicks in rounds.values():
        for ijk, positive in clicks:
            i, j, k = np.rint(ijk).astype(int)
            assert bool(label[k, j, i]) == positive


def test_the_semi_supervised_table_pairs_each_run_with_its_labelled_only_twin(tmp_path, capsys):
    """Tables 2 and 3 as docs/results.md quotes them: the UA-MT rows beside the MECCA rows, each "with
    the other cases" run tested against its labelled-only twin of the same seed, MECCA against the
    U-Net rows at each share."""
    results = ROOT / "research" / "results"
    _results_script("semi_table").main(str(tmp_path / "semi.png"), [str(results / name) for name in ("semi", "semi-seed1", "semi-ua-mt")])
    printed = capsys.readouterr().out
    assert "| UA-MT (U-Net student) + the other cases | 8 | 56 | 0.556 0.556 0.556 0.556 0.556 | 0.556 |" in printed
    assert "| MECCA + eq. 6 on the other cases | 8 | semi-seed1 | -0.174 |" in printed
    assert "| UA-MT (U-Net student) + the other cases | 32 | semi-ua-mt | -0.015 | 0.71 |" in printed
    assert "against UA-MT (U-Net student) + the other cases | 32 | -0.215 |" in printed
    assert (tmp_path / "semi.png").stat().st_size > 0
