"""research/bench.py: the classical tools timed on the cubes and clicks `mecca bench` gives MECCA,
and the levers (a smoke run on tiny ROIs; figures are never asserted as timings)."""

import json

import torch

from research.bench import format_table, main


def test_peers_and_levers_are_timed_beside_mecca(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--json", str(tmp_path / "bench.json"), "--roi", "16,24", "--repeats", "1", "--levers"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "bench.json").read_text())
    for roi in result["rois"].values():
        for peer in ("grow_from_seeds", "random_walker", "mecca"):
            assert roi[f"{peer}_round_s"]["median"] > 0
    levers = {row["lever"]: row for row in result["levers"]["rows"]}
    assert "torch.compile (Inductor)" in levers and "1 thread" in levers and len(levers) == 11
    assert "fusion layer of 8 channels (models before fusion_width)" in levers
    assert all(row["seconds"] > 0 for row in levers.values()), levers  # torch.compile included: it must compile
    assert "random walker s" in capsys.readouterr().out


def test_without_slicer_core_the_table_says_why_grow_from_seeds_has_no_figure():
    row = {"mecca_round_s": {"median": 0.1}, "grow_from_seeds_round_s": None,
           "grow_from_seeds_not_timed": "grow-from-seeds needs the slicer-core package: pip install slicer-core",
           "random_walker_round_s": {"median": 0.5}}
    table = format_table({"rois": {"64": row}})
    assert "nan" not in table and "n/a" in table and "  5.0" in table
    assert "grow-from-seeds not timed: grow-from-seeds needs the slicer-core package" in table
