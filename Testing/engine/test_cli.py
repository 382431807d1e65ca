"""The mecca command: demo on a fresh install, segment from world clicks, errors as messages."""

import json

import numpy as np
import pytest
from mecca.checkpoint import save_model
from mecca.cli import main
from mecca.io import read_volume, write_volume

OUTPUTS = ["segmentation.nii.gz", "probability.nii.gz", "confidence.nii.gz", "advice_regions.nii.gz",
           "montage.png", "summary.json"]


def test_demo_writes_every_output_with_the_input_geometry(tmp_path, capsys):
    from mecca.resources import SAMPLE_IMAGE, resource_path

    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "round 5/5" in printed
    for name in OUTPUTS:
        assert (tmp_path / "demo" / name).exists(), name
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert len(summary["dice_per_round"]) == 5 and len(summary["seconds_per_round"]) == 5
    sample = read_volume(resource_path(*SAMPLE_IMAGE))
    for name in OUTPUTS[:4]:
        out = read_volume(tmp_path / "demo" / name)
        assert out.shape == sample.shape
        assert np.allclose(out.spacing, sample.spacing) and np.allclose(out.origin, sample.origin)
        assert np.allclose(out.direction, sample.direction)
    assert set(np.unique(read_volume(tmp_path / "demo" / "advice_regions.nii.gz").array)) <= set(range(6))


def test_the_readme_montage_and_its_caption_are_the_demo_as_it_runs_now(tmp_path, capsys):
    """The README's picture and the figures its caption quotes come from one demo run: a change of
    model or session that moves the demo makes this fail until both are made again."""
    import re
    from pathlib import Path

    from PIL import Image

    root = Path(__file__).resolve().parents[2]
    caption = re.search(r"Dice against the expert label after rounds 1-5: ([0-9., ]+)\n", (root / "README.md").read_text())
    quoted = [float(value) for value in caption.group(1).replace("\n", " ").split(", ")]
    drawn = Image.open(root / "docs" / "images" / "demo-montage.png").text["Description"]
    assert [float(value) for value in drawn.split("per round ")[1].split(", ")] == quoted
    assert main(["demo", "--precision", "float32", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [round(dice, 3) for dice in summary["dice_per_round"]] == quoted


@pytest.fixture
def image_and_model(tmp_path, blob_volume, untrained_model):
    volume, label = blob_volume
    write_volume(volume, tmp_path / "image.nrrd")
    write_volume(volume.with_array(label), tmp_path / "label.nrrd")
    save_model(untrained_model, tmp_path / "model.safetensors")
    return volume, tmp_path


@pytest.mark.parametrize("system", ["RAS", "LPS"])
def test_segment_places_world_clicks_on_the_right_voxel(image_and_model, system):
    volume, folder = image_and_model
    ijk = (18, 20, 12)
    lps = volume.index_to_world(ijk)
    point = lps * np.array([-1, -1, 1]) if system == "RAS" else lps
    clicks = {"coordinate_system": system, "clicks": [{"point": point.tolist(), "positive": True},
                                                       {"point": point.tolist(), "positive": False, "round": 2}]}
    (folder / "clicks.json").write_text(json.dumps(clicks))
    out = folder / "out"
    code = main(["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(out), "--model", str(folder / "model.safetensors"), "--label", str(folder / "label.nrrd"),
                 *(["--flip-average", "--lean-correction", "0"] if system == "LPS" else [])])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and len(summary["dice_per_round"]) == 2
    assert summary["flip_average"] is (system == "LPS")
    assert summary["lean_correction"] == (0.0 if system == "LPS" else 0.5)
    assert [c["ijk"] for c in summary["clicks"]] == [list(ijk), list(ijk)]
    assert [c["positive"] for c in summary["clicks"]] == [True, False]
    assert [c["round"] for c in summary["clicks"]] == [1, 2]
    assert all(np.allclose(c["lps_mm"], lps, atol=1e-3) for c in summary["clicks"])  # as typed, in LPS
    for name in OUTPUTS:
        assert (out / name).exists()


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    (json.dumps({"clicks": [{"point": [0, 0, 0], "positive": True}]}), "coordinate_system"),
    (json.dumps({"coordinate_system": "RAS", "clicks": []}), "non-empty list"),
    (json.dumps({"coordinate_system": "RAS", "clicks": [{"point": [0, 0], "positive": True}]}), "three finite"),
    (json.dumps({"coordinate_system": "RAS", "clicks": [{"point": [1e6, 0, 0], "positive": True}]}), "outside the image"),
    (json.dumps({"coordinate_system": "RAS", "clicks": [{"point": ["1", "2", "3"], "positive": True}]}),
     "three numbers [x, y, z]"),
    (json.dumps({"coordinate_system": "LPS", "clicks": [{"point": "10,20,30", "positive": True}]}), "three numbers"),
    (json.dumps({"coordinate_system": "LPS", "clicks": [{"point": [0, 0, 0], "positive": True, "round": "2"}]}),
     "rounds are whole numbers"),
    ("ROI", "a box of no size"),
])
def test_segment_reports_bad_click_files(image_and_model, capsys, content, message):
    volume, folder = image_and_model
    if content == "ROI":  # min and max on the same plane: no box at all
        corner = volume.index_to_world((18, 20, 12)).tolist()
        content = json.dumps({"coordinate_system": "LPS", "clicks": [{"point": corner, "positive": True}],
                              "roi": {"min": corner, "max": volume.index_to_world((25, 26, 12)).tolist()}})
    (folder / "clicks.json").write_text(content)
    code = main(["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(folder / "out"), "--model", str(folder / "model.safetensors")])
    error = capsys.readouterr().err
    assert code == 2 and message in error and "Traceback" not in error and "np.int64" not in error
    assert not (folder / "out").exists()


def test_segment_refuses_an_empty_reference_a_zero_round_count_and_an_image_nifti_cannot_hold(
        image_and_model, capsys):
    volume, folder = image_and_model
    clicks = {"coordinate_system": "LPS", "clicks": [{"point": volume.index_to_world((18, 20, 12)).tolist(),
                                                      "positive": True}]}
    (folder / "clicks.json").write_text(json.dumps(clicks))
    write_volume(volume.with_array(np.zeros(volume.shape, np.uint8)), folder / "empty.nrrd")
    common = ["--clicks", str(folder / "clicks.json"), "--out", str(folder / "out"), "--model",
              str(folder / "model.safetensors")]
    assert main(["segment", "--image", str(folder / "image.nrrd"), "--label", str(folder / "empty.nrrd"), *common]) == 2
    assert "no voxel is foreground" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "--image", str(folder / "image.nrrd"), "--rounds", "0", *common])
    assert exit_.value.code == 2
    long = np.random.default_rng(0).normal(0, 1, (40000, 1, 1)).astype(np.float32)  # 1 x 1 x 40000 (i, j, k)
    write_volume(volume.with_array(long), folder / "long.nrrd")
    (folder / "clicks.json").write_text(json.dumps({"coordinate_system": "LPS", "clicks": [
        {"point": volume.with_array(long).index_to_world((0, 0, 20000)).tolist(), "positive": True}]}))
    assert main(["segment", "--image", str(folder / "long.nrrd"), *common]) == 2
    assert "more than a NIfTI file can hold" in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_missing_model_is_a_clear_error(image_and_model, capsys):
    _, folder = image_and_model
    code = main(["info", "--model", str(folder / "none.safetensors")])
    assert code == 2 and "model file not found" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "a lot"])
def test_a_bad_lean_correction_is_refused_before_anything_runs(image_and_model, capsys, value):
    _, folder = image_and_model
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "none.json"),
              "--out", str(folder / "out"), "--lean-correction", value])
    assert exit_.value.code == 2 and "--lean-correction: must be a finite number" in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_an_out_that_names_a_file_is_refused_before_any_work(image_and_model, capsys, tmp_path):
    _, folder = image_and_model
    taken = tmp_path / "taken.txt"
    taken.write_text("the user's file")
    (folder / "clicks.json").write_text(json.dumps({"coordinate_system": "RAS",
                                                    "clicks": [{"point": [0, 0, 0], "positive": True}]}))
    for command in (["demo"], ["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "clicks.json"),
                                "--model", str(folder / "model.safetensors")]):
        for out in (taken, taken / "inside"):
            assert main([*command, "--out", str(out)]) == 2
            err = capsys.readouterr()
            assert f"{taken} is a file; give the name of a folder" in err.err and "round 1" not in err.out
    assert taken.read_text() == "the user's file"


def test_a_clicks_file_holding_a_bare_list_is_explained(image_and_model, capsys):
    _, folder = image_and_model
    (folder / "clicks.json").write_text(json.dumps([{"point": [0, 0, 0], "positive": True}]))
    assert main(["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(folder / "out"), "--model", str(folder / "model.safetensors")]) == 2
    assert "is a JSON object" in capsys.readouterr().err and not (folder / "out").exists()


def test_a_click_outside_the_image_is_reported_in_millimetres_and_voxels(image_and_model, capsys):
    _, folder = image_and_model
    (folder / "clicks.json").write_text(json.dumps({"coordinate_system": "RAS",
                                                    "clicks": [{"point": [1000.5, 0, 0], "positive": True}]}))
    assert main(["segment", "--image", str(folder / "image.nrrd"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(folder / "out"), "--model", str(folder / "model.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "click 0 at RAS (1000.5, 0, 0) mm is voxel (i, j, k) (" in err and "outside the image (size (36, 40, 24))" in err


def test_partly_nan_images_say_how_the_nans_were_treated(image_and_model, capsys):
    volume, folder = image_and_model
    array = volume.array.astype(np.float32)
    array[:2] = np.nan
    write_volume(volume.with_array(array), folder / "holes.nrrd")
    lps = volume.index_to_world((18, 20, 12))
    (folder / "clicks.json").write_text(json.dumps({"coordinate_system": "LPS",
                                                    "clicks": [{"point": lps.tolist(), "positive": True}]}))
    assert main(["segment", "--image", str(folder / "holes.nrrd"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(folder / "out"), "--model", str(folder / "model.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert f"note: {2 * 40 * 36} voxels of holes.nrrd are NaN or infinite" in printed and "1 round\n" in printed



def test_an_all_nan_image_is_refused_without_a_note_first(image_and_model, capsys):
    """The refusal is the whole message: no "NaN voxels take the lowest value" note before it."""
    volume, folder = image_and_model
    write_volume(volume.with_array(np.full(volume.shape, np.nan, np.float32)), folder / "empty.mha")
    lps = volume.index_to_world((18, 20, 12))
    (folder / "clicks.json").write_text(json.dumps({"coordinate_system": "LPS",
                                                    "clicks": [{"point": lps.tolist(), "positive": True}]}))
    assert main(["segment", "--image", str(folder / "empty.mha"), "--clicks", str(folder / "clicks.json"),
                 "--out", str(folder / "out"), "--model", str(folder / "model.safetensors")]) == 2
    printed = capsys.readouterr()
    assert "every voxel is NaN or infinite" in printed.err and "note:" not in printed.out

def test_version_and_help_name_defaults_and_choices(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mecca {version('meccasegment')}"
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "repeat to compare several" in text and "rounds of simulated clicks (default: 5)" in text
    assert "--user {edge,interior}" in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: 64,96,128)" in capsys.readouterr().out


def test_info_prints_a_summary_a_person_reads_and_the_whole_record_as_json_on_request(capsys):
    assert main(["info"]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("mecca.safetensors: MECCA model, joint architecture") and len(summary.splitlines()) < 30
    assert "evaluated: Hippocampus, interior user, 44 cases: Dice" in summary and "(label 1)" in summary
    assert main(["info", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["network"]["width"] == 16 and "evaluations" in record["metrics"]
