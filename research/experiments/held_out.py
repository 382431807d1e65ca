"""What the validation-split scripts here share: their command line (MSD folders, --json, --model,
--lean-correction) and the held-out cases they run on."""

import argparse
import json

from mecca.checkpoint import load_model
from mecca.datasets import MSDDataset
from mecca.defaults import INFERENCE_DEFAULTS
from mecca.resources import DEFAULT_MODEL, resource_path


def run(description: str, dataset_results, add_arguments=None) -> None:
    """Parse the command line (and a script's own options, ``add_arguments(parser)``), run
    ``dataset_results(root, model, args)`` on each dataset (the model prepared as a session prepares
    it; ``args.lean_correction`` for the sessions), print each result and write them all as JSON by
    dataset name (with the options)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help="MSD folders")
    parser.add_argument("--json", required=True)
    parser.add_argument("--model", help="default: the bundled model")
    add_lean_correction(parser)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    model = load_model(args.model or resource_path(*DEFAULT_MODEL)).prepare_for_inference()
    results = {}
    for root in args.datasets:
        name = MSDDataset.open(root).name
        results[name] = dataset_results(root, model, args)
        print(name, results[name], flush=True)
    with open(args.json, "w") as out:
        json.dump({"model": args.model or "bundled", "options": {k: v for k, v in vars(args).items() if k not in ("datasets", "json", "model")},
                   **results}, out, indent=1)


def add_lean_correction(parser: argparse.ArgumentParser) -> None:
    """The sessions' lean correction as an option of a docs script (0 reproduces the figures measured
    before it existed; the session checks the value)."""
    parser.add_argument("--lean-correction", type=float, default=INFERENCE_DEFAULTS["lean_correction"],
                        help=f"the sessions' (default {INFERENCE_DEFAULTS['lean_correction']}; 0: as before it existed)")


def validation_cases(root: str):
    """(image, label) of each case `mecca train` held out of ``root``."""
    return [case.load() for case in MSDDataset.open(root).validation_cases(0.2)]
