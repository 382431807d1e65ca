"""MECCA beside the methods it is compared with, under the same seeded simulated user and the same
click points (the paper's Table 1 shape): MECCA, IteR-MRL and BS-IRIS model files
(research/baselines/bs_iris.py), InterCNN and DeepIGeoS
(research/baselines/intercnn.py), the fully automatic P-Net and U-Net (research/baselines/automatic.py),
Slicer's Grow from seeds and scikit-image's random walker (its beta chosen on training cases).

    python -m research.compare --dataset ../shared/data/Task04_Hippocampus --user interior --json out.json

The options of ``mecca evaluate`` apply (``mecca.cli.add_evaluation_options``); the models default to
the bundled MECCA model and research/models/. A learned baseline whose model file is missing is
left out of the default run (all methods) with the command that makes it, and is an error when
``--methods`` names it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from mecca.checkpoint import load_model, resolve_device
from mecca.cli import add_evaluation_options, evaluation_cases, evaluation_report, parse_labels
from mecca.errors import CheckpointError, InputError
from mecca.harness import METHODS, MeccaMethod
from mecca.io import write_json
from mecca.resources import DEFAULT_MODEL, resource_path

from .baselines.seeded_tools import RANDOM_WALKER_BETAS, GrowFromSeedsMethod, RandomWalkerMethod, tune_random_walker_beta

MODELS = Path(__file__).resolve().parent / "models"
NAMES = ("mecca", "iter-mrl", "bs-iris", "intercnn", "deepigeos", "p-net", "u-net", "grow-from-seeds", "random-walker")
# The learned baselines (their methods are registered with mecca.harness by research.baselines) and
# the command that trains each (research/models/BASELINES.md).
_DATA = "--dataset ../shared/data/Task04_Hippocampus --dataset ../shared/data/LeftAtrium2018 --epochs 8"
_INTERCNN = f"python -m research.baselines.intercnn {_DATA} --config research/recipes/intercnn.json"
BASELINE_COMMANDS = {"intercnn": f"{_INTERCNN} --out research/models/intercnn.safetensors",
                     "deepigeos": f"{_INTERCNN} --hint-encoding geodesic --out research/models/deepigeos.safetensors",
                     "bs-iris": f"mecca train {_DATA} --config research/recipes/bs-iris.json "
                                "--out research/models/bs-iris.safetensors",
                     **{name: f"python -m research.baselines.automatic --architecture {name} {_DATA} "
                              f"--out research/models/{name}.safetensors" for name in ("p-net", "u-net")}}


def _beta(text: str) -> float | str:
    if text == "tune":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number or 'tune', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m research.compare", description=__doc__.split("\n\n")[0])
    add_evaluation_options(parser)
    parser.add_argument("--methods", help=f"comma-separated, any of: {', '.join(NAMES)} "
                        "(default: all; those without a model file are left out)")
    parser.add_argument("--model", help="MECCA model (default: bundled)")
    parser.add_argument("--iter-mrl-model", default=str(MODELS / "iter-mrl.safetensors"),
                        help="IteR-MRL model (default: research/models/iter-mrl.safetensors)")
    for name in BASELINE_COMMANDS:
        parser.add_argument(f"--{name}-model", default=str(MODELS / f"{name}.safetensors"),
                            help=f"{name} model (default: research/models/{name}.safetensors)")
    parser.add_argument("--random-walker-beta", type=_beta, default="tune",
                        help="the random walker's edge sensitivity, or 'tune' to choose it from "
                             f"{', '.join(f'{b:g}' for b in RANDOM_WALKER_BETAS)} on training cases (default: tune)")
    parser.add_argument("--tuning-cases", type=int, default=8,
                        help="training cases (first N by name) on which --random-walker-beta tune chooses (default: 8)")
    parser.add_argument("--curves-from", metavar="JSON",
                        help="only draw --plot again for this earlier result: its curves, its first case run again")
    return parser


def method_factories(args, dataset) -> tuple[dict, dict]:
    """The chosen methods' factories and the models (or the random walker's beta) each uses."""
    chosen = args.methods is not None
    names = [m.strip() for m in args.methods.split(",") if m.strip()] if chosen else list(NAMES)
    unknown = set(names) - set(NAMES)
    if unknown:
        raise InputError(f"--methods: unknown {sorted(unknown)}; choose from {', '.join(NAMES)}")
    factories, used_models = {}, {}
    for name in names:
        if name in ("mecca", "iter-mrl"):
            path = (args.model or resource_path(*DEFAULT_MODEL)) if name == "mecca" else args.iter_mrl_model
            model = load_model(path, device=resolve_device(args.device), precision=args.precision)
            used_models[name] = str(path)
            factories[name] = lambda m=model, n=name: MeccaMethod(m, n, args.steps_per_round, args.flip_average,
                                                                   args.lean_correction, args.start)
        elif name in BASELINE_COMMANDS:
            path = getattr(args, f"{name.replace('-', '_')}_model")
            if not Path(path).is_file():
                message = f"no {name} model at {path}; make it with: {BASELINE_COMMANDS[name]}"
                if chosen:
                    raise InputError(message)
                print(f"skipping {message}", flush=True)
                continue
            try:
                METHODS[name](path)  # a wrong file is reported before the run
            except CheckpointError as error:
                raise CheckpointError(f"{error}; make a {name} model with: {BASELINE_COMMANDS[name]}") from error
            used_models[name] = path
            factories[name] = lambda path=path, make=METHODS[name]: make(path)
        elif name == "grow-from-seeds":
            try:
                GrowFromSeedsMethod()
            except RuntimeError as error:
                print(f"skipping grow-from-seeds: {error}", flush=True)
                continue
            factories[name] = GrowFromSeedsMethod
        else:
            beta, beta_scores = args.random_walker_beta, None
            if beta == "tune":
                tuning = dataset.training_cases(args.validation_fraction)[: args.tuning_cases]
                print(f"choosing the random walker's beta on {len(tuning)} training cases ({args.user} clicks)", flush=True)
                beta, beta_scores = tune_random_walker_beta(tuning, parse_labels(args.labels), args.rounds,
                                                            args.clicks_per_round, args.seed, args.user)
                print(f"random walker beta {beta:g} (mean Dice over rounds: "
                      + ", ".join(f"{b:g}: {d:.3f}" for b, d in beta_scores.items()) + ")", flush=True)
            used_models["random-walker"] = {"beta": beta, "tuning_mean_dice": beta_scores}
            factories[name] = lambda b=beta: RandomWalkerMethod(b)
    return factories, used_models


def run(args) -> dict:
    dataset, cases = evaluation_cases(args)
    return evaluation_report(args, dataset, cases, *method_factories(args, dataset))


def redraw(args) -> None:
    """The figure of an earlier result (--curves-from) in today's drawing: its Dice curves as they
    were, its one case run again with the same methods, clicks and random-walker beta (--model gives
    the MECCA model that result used)."""
    import json

    from mecca.harness import evaluate
    from mecca.report import write_evaluation_figure

    earlier = json.loads(Path(args.curves_from).read_text())
    args.methods = ",".join(name for name, stats in earlier["methods"].items() if stats.get("cases"))
    args.random_walker_beta = earlier["models"].get("random-walker", {}).get("beta", args.random_walker_beta)
    args.user, args.rounds, args.clicks_per_round = earlier["user"], earlier["rounds"], earlier["clicks_per_round"]
    dataset, cases = evaluation_cases(args)
    factories, _ = method_factories(args, dataset)
    _, _, figure_case = evaluate(cases[:1], factories, parse_labels(args.labels), args.rounds, args.clicks_per_round,
                                 earlier["seed"], user=args.user)
    write_evaluation_figure(args.plot, earlier["methods"], figure_case, f"{dataset.name}: {earlier['cases']} cases, "
                            f"{args.clicks_per_round} simulated {args.user} clicks per round")
    print(f"wrote {args.plot}", flush=True)


def paired_tests(result: dict, reference: str = "mecca") -> dict:
    """Wilcoxon signed-rank test of each method's round-by-round Dice against ``reference``'s on the
    same cases (paired by case): {method: {"round": [p-values]}}. Cases one of the two lacks are left out."""
    from scipy.stats import wilcoxon

    methods = result["methods"]
    if reference not in methods or not methods[reference].get("cases"):
        return {}
    ours = {c["case"]: c["dice_per_round"] for c in methods[reference]["per_case"]}
    tests = {}
    for name, stats in methods.items():
        theirs = {c["case"]: c["dice_per_round"] for c in stats.get("per_case", [])}
        shared = sorted(set(ours) & set(theirs))
        if name == reference or len(shared) < 2:
            continue
        a, b = np.array([ours[c] for c in shared]), np.array([theirs[c] for c in shared])
        tests[name] = {"cases": len(shared), "p_per_round": [
            float(wilcoxon(a[:, r], b[:, r]).pvalue) if np.any(a[:, r] != b[:, r]) else 1.0 for r in range(a.shape[1])]}
    return tests


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.curves_from:
            if not args.plot:
                raise InputError("--curves-from only draws a figure: give --plot")
            redraw(args)
            return 0
        result = run(args)
        result["wilcoxon_vs_mecca"] = paired_tests(result)
        write_json(result, args.json)
        for name, test in result["wilcoxon_vs_mecca"].items():
            p = test["p_per_round"][-1]
            print(f"{name:16s} vs mecca at round {args.rounds}: Wilcoxon p = {p:.2g}{' *' if p < 0.05 else ''} "
                  f"({test['cases']} paired cases)", flush=True)
    except (InputError, CheckpointError, FileNotFoundError) as error:
        print(f"research.compare: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
