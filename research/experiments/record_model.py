"""Write a model file's whole record into its metadata, so its card, the README and the docs quote one
source: every earlier training stage (its lineage, read from the file's versions in git history) and
the evaluations measured on it (``mecca evaluate`` / ``python -m research.compare`` JSON files, the
MECCA row). The weights are copied unchanged (checked).

    python -m research.experiments.record_model --model Resources/Models/mecca.safetensors \\
        --history-from-git --evaluation research/results/bundled-*.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import torch
from mecca.checkpoint import read_model_file, write_model_file
from mecca.training import lineage_of

ROOT = Path(__file__).resolve().parents[2]
EVALUATION_FIELDS = ("dataset", "labels", "user", "split", "cases", "rounds", "clicks_per_round", "seed", "command",
                     "machine")


def git_lineage(model: Path) -> list[dict]:
    """The training stages of the committed versions of ``model`` before the one with its weights,
    oldest first (each version's own training record; a stage fine-tuned from the file itself names
    the stage before)."""
    relative = model.resolve().relative_to(ROOT)
    commits = subprocess.run(["git", "log", "--format=%h", "--reverse", "--", str(relative)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    weights = read_model_file(model)[0]
    stages, previous = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for commit in commits:
            path = Path(folder) / f"{commit}.safetensors"
            path.write_bytes(subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=ROOT,
                                            capture_output=True, check=True).stdout)
            earlier, metadata = read_model_file(path)
            if _same_weights(earlier, weights):
                break  # the version being recorded: its own training record is the last stage
            if _same_weights(earlier, previous):
                continue  # the same weights committed again with another record: not a stage
            previous = earlier
            stage = lineage_of(metadata)[-1]
            if stage.get("init") and stages:
                stage["init"] = f"stage {len(stages)}"
            stages.append({**stage, "commit": commit})
    return stages


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def evaluation_record(path: Path) -> dict:
    """The MECCA row of an evaluation JSON with the protocol it was measured under."""
    result = json.loads(path.read_text())
    mecca = result["methods"]["mecca"]
    return {**{key: result.get(key) for key in EVALUATION_FIELDS},
            **{key: mecca[key] for key in ("cases", "dice_mean_per_round", "dice_sd_per_round",
                                           "assd_mm_mean_per_round")}}  # the cases scored, not those asked for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.experiments.record_model", description=__doc__)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--history-from-git", action="store_true", help="set the lineage from git history")
    parser.add_argument("--evaluation", nargs="*", type=Path, default=[], help="evaluation JSON files to record")
    args = parser.parse_args(argv)
    tensors, metadata = read_model_file(args.model)
    if args.history_from_git:
        metadata["lineage"] = git_lineage(args.model)
        metadata["training"]["data"]["init"] = f"stage {len(metadata['lineage'])}" if metadata["lineage"] else None
    if args.evaluation:
        metadata.setdefault("metrics", {})["evaluations"] = [evaluation_record(p) for p in args.evaluation]
    write_model_file(tensors, {"mecca": json.dumps(metadata)}, args.model)
    written = read_model_file(args.model)[0]
    assert all(torch.equal(written[k], tensors[k]) for k in tensors), "weights changed"
    print(f"{args.model}: {len(metadata.get('lineage', []))} earlier stages, "
          f"{len(metadata.get('metrics', {}).get('evaluations', []))} evaluations recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
