"""Fine-tuning on local cases: the scene's segments and accepted sessions exported as MSD folders,
and the engine's command line run in background processes (evaluate the current model on a
held-back cases, train --init, evaluate the new model), read through the engine's progress stream
(mecca.progress) without blocking the application."""

import json
import os
import queue
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
from mecca.progress import parse_line, training_fraction

from .mrml import engineVolume

MODULE_DIR = Path(__file__).resolve().parents[1]


@dataclass
class LabelledCase:
    """A volume and one segment of a segmentation: a labelled case for fine-tuning."""

    volumeNode: object
    segmentationNode: object
    segmentId: str

    @property
    def description(self) -> str:
        segment = self.segmentationNode.GetSegmentation().GetSegment(self.segmentId)
        return f"{self.volumeNode.GetName()}: {self.segmentationNode.GetName()} / {segment.GetName()}"


@dataclass
class InteractiveCase:
    """A session accepted in this module: the volume and the clicks of each round (no label)."""

    recordNode: object

    @property
    def volumeNode(self):
        return self.recordNode.GetNodeReference("volume")

    @property
    def clicks(self) -> list[dict]:
        return json.loads(self.recordNode.GetParameter("clicks"))

    @property
    def description(self) -> str:
        return f"{self.volumeNode.GetName()}: {len(self.clicks)} recorded clicks (unlabelled)"


@dataclass
class TrainingData:
    """An export for ``mecca train``: MSD-layout folders (None when there is nothing for them)."""

    folder: Path
    labelledDir: Path | None
    interactiveDir: Path | None
    heldOutDir: Path | None


def msdManifest(name: str, entries: list[dict]) -> dict:
    return {"name": name, "description": "exported from 3D Slicer by MECCASegment", "tensorImageSize": "3D",
            "modality": {"0": "image"}, "labels": {"0": "background", "1": "foreground"},
            "numTraining": len(entries), "training": entries, "test": []}


def safeName(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "case"


def exportCases(folder, labelledCases, interactiveCases=(), heldOutCases=()) -> TrainingData:
    """Write the cases as MSD-layout folders for ``mecca train`` / ``mecca evaluate``.

    ``labelled/``: image + label per case; ``interactive/``: image + the recorded clicks (RAS, per
    round; the format of ``mecca segment --clicks``); ``heldout/``: the held-back labelled cases,
    kept out of training for the before/after comparison. Volumes are written in their own frame
    (parent transforms are not baked in); labels are resampled onto the volume's grid.
    """
    from mecca.errors import InputError
    from mecca.io import write_json, write_volume

    folder = Path(folder)
    training = [case for case in labelledCases if case not in heldOutCases]
    names = {}

    def caseName(text):
        base = safeName(text)
        names[base] = names.get(base, 0) + 1
        return base if names[base] == 1 else f"{base}_{names[base]}"

    def writeLabelled(root, cases):
        entries = []
        for case in cases:
            volume = engineVolume(case.volumeNode)
            label = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentationNode, case.segmentId, case.volumeNode)
            if not label.any():
                raise InputError(f"{case.description}: the segment is empty on this volume; it cannot teach anything")
            name = caseName(f"{case.volumeNode.GetName()}_{case.segmentationNode.GetSegmentation().GetSegment(case.segmentId).GetName()}")
            write_volume(volume, root / "imagesTr" / f"{name}.nii.gz")
            write_volume(volume.with_array((label > 0).astype(np.uint8)), root / "labelsTr" / f"{name}.nii.gz")
            entries.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
        write_json(msdManifest(root.name, entries), root / "dataset.json")
        return root

    def writeInteractive(root, cases):
        entries = []
        rasFromLps = np.array([-1.0, -1.0, 1.0])
        for case in cases:
            volume = engineVolume(case.volumeNode)
            name = caseName(case.volumeNode.GetName())
            clicks = [{"point": [round(float(v), 4) for v in rasFromLps * volume.index_to_world(click["ijk"])],
                       "positive": click["positive"], "round": click["round"]} for click in case.clicks]
            write_volume(volume, root / "imagesTr" / f"{name}.nii.gz")
            write_json({"coordinate_system": "RAS", "clicks": clicks}, root / "clicksTr" / f"{name}.json")
            entries.append({"image": f"./imagesTr/{name}.nii.gz", "clicks": f"./clicksTr/{name}.json"})
        write_json(msdManifest(root.name, entries), root / "dataset.json")
        return root

    return TrainingData(
        folder,
        writeLabelled(folder / "labelled", training) if training else None,
        writeInteractive(folder / "interactive", list(interactiveCases)) if interactiveCases else None,
        writeLabelled(folder / "heldout", list(heldOutCases)) if heldOutCases else None)


def trainCommand(modelFile, data: TrainingData, outputModel, epochs: int, device: str = "auto",
                 datasetFolders=()) -> list[str]:
    """``mecca train --init <current model>`` on the exported and the given MSD folders; ``epochs`` 0
    leaves the length to ``mecca train`` (10 epochs on a structure the model knows, 40 on one it
    does not: mecca.recipe)."""
    datasets = [d for d in (data.labelledDir, *map(Path, datasetFolders)) if d is not None]
    arguments = ["train"]
    for dataset in datasets:
        arguments += ["--dataset", dataset]
    if data.interactiveDir is not None:
        arguments += ["--unlabeled", data.interactiveDir]
    # no validation split: the held-back cases are the comparison, and local datasets are small
    arguments += ["--init", modelFile, "--out", outputModel, *(["--epochs", int(epochs)] if epochs else []),
                  "--device", device, "--validation-fraction", 0, "--progress", "jsonl"]
    return meccaCommand(*arguments)


def evaluateCommand(datasetDir, modelFile, jsonPath) -> list[str]:
    """``mecca evaluate`` of one model on every case of a dataset folder, with the simulated user
    that clicks as a person does (the deepest point of the largest error): a fine-tuning that
    pleased the paper's edge user but lost how to follow such clicks was offered before (issue 37)."""
    return meccaCommand("evaluate", "--dataset", datasetDir, "--model", modelFile, "--split", "all",
                        "--user", "interior", "--json", jsonPath)


def formatDuration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def pythonExecutable() -> str:
    """The Python that runs the engine's command line: Slicer's own (PythonSlicer) in Slicer."""
    return shutil.which("PythonSlicer") or sys.executable


def meccaCommand(*arguments) -> list[str]:
    """The ``mecca`` command line (``python -m mecca.cli``, which needs no installed script)."""
    return [pythonExecutable(), "-m", "mecca.cli", *(str(a) for a in arguments)]


@dataclass
class JobStep:
    name: str
    command: list
    weight: float = 1.0  # share of the progress bar


class BackgroundJob:
    """Runs its steps' commands one after another, each in its own process.

    Nothing here waits: a thread reads each process's output, and ``poll()`` (from a Qt timer in
    the GUI, a loop in scripts) returns the events since the last call, parsed with
    mecca.progress.parse_line, plus {"event": "stepStarted" | "failed" | "cancelled" | "finished", "message"}.
    """

    def __init__(self, steps: list, environment: dict | None = None) -> None:
        self.steps = list(steps)
        self.environment = environment or {}
        self.status = "waiting"  # running, finished, failed, cancelled
        self.stepIndex = -1
        self._process = None
        self._output: queue.Queue = queue.Queue()
        self._events: list = []

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def currentStep(self) -> JobStep | None:
        return self.steps[self.stepIndex] if 0 <= self.stepIndex < len(self.steps) else None

    def start(self) -> None:
        self.status = "running"
        self._startNext()

    def _startNext(self) -> None:
        self.stepIndex += 1
        if self.stepIndex >= len(self.steps):
            self.status = "finished"
            self._events.append({"event": "finished", "message": "finished"})
            return
        step = self.currentStep
        self._events.append({"event": "stepStarted", "step": step.name, "message": f"{step.name}: {' '.join(step.command)}"})
        self._process = slicer.util.launchConsoleProcess(step.command, useStartupEnvironment=False,
                                                         updateEnvironment=self.environment)
        threading.Thread(target=self._read, args=(self._process, self._output), daemon=True).start()

    @staticmethod
    def _read(process, output: queue.Queue) -> None:
        for line in process.stdout:
            output.put(("line", line.rstrip("\n")))
        output.put(("exit", process.wait()))

    def poll(self) -> list:
        events, self._events = self._events, []
        while True:
            try:
                kind, payload = self._output.get_nowait()
            except queue.Empty:
                break
            if kind == "line":
                events.append(dict(parse_line(payload), step=self.currentStep.name))
                self.onEvent(events[-1])
            elif self.status == "cancelled":
                events.append({"event": "cancelled", "message": f"cancelled during {self.currentStep.name}"})
            elif payload != 0:
                self.status = "failed"
                events.append({"event": "failed", "message": f"{self.currentStep.name} failed (exit code {payload}); "
                                                             "see the log above"})
            else:
                self._startNext()
                events += self._events
                self._events = []
        return events

    def onEvent(self, event: dict) -> None:
        """Subclasses follow the output here (progress, results)."""

    def cancel(self) -> None:
        """Stop the running process; the steps after it do not start."""
        if self.running:
            self.status = "cancelled"
            self._process.terminate()

    @property
    def fraction(self) -> float:
        """Progress 0..1 over the steps, by weight; within a step by its events (see onEvent)."""
        total = sum(step.weight for step in self.steps) or 1.0
        done = sum(step.weight for step in self.steps[:max(self.stepIndex, 0)])
        if self.status == "finished":
            return 1.0
        return min((done + self._stepFraction() * (self.currentStep.weight if self.currentStep else 0)) / total, 1.0)

    def _stepFraction(self) -> float:
        return 0.0


def engineEnvironment() -> dict:
    """PYTHONPATH for the engine's command line: the folder holding mecca first."""
    return {"PYTHONPATH": os.pathsep.join([str(MODULE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}


class FineTuningRun(BackgroundJob):
    """Evaluate the current model on the held-back cases, fine-tune it, evaluate the new model."""

    def __init__(self, modelFile, data: TrainingData, newModelPath: Path, epochs: int, device: str, datasetFolders=()):
        """Fine-tunes ``modelFile`` (the current model) on ``data`` (exportCases) and the MSD
        ``datasetFolders`` into ``newModelPath``."""
        folder = data.folder.parent
        self.folder = folder
        self.newModelPath = Path(newModelPath)
        self.beforeJson = folder / "evaluation-current-model.json"
        self.afterJson = folder / "evaluation-new-model.json"
        training = trainCommand(modelFile, data, self.newModelPath, epochs, device, datasetFolders)
        steps = [JobStep("fine-tuning", training, 10.0)]
        if data.heldOutDir is not None:
            steps.insert(0, JobStep("evaluating the current model on the held-back cases",
                                    evaluateCommand(data.heldOutDir, modelFile, self.beforeJson)))
            steps.append(JobStep("evaluating the new model on the held-back cases",
                                 evaluateCommand(data.heldOutDir, self.newModelPath, self.afterJson)))
        super().__init__(steps, engineEnvironment())
        self.trainingFraction = 0.0
        self.etaSeconds = None
        self.peakMemoryMb = None  # the training process's peak resident memory so far

    def onEvent(self, event: dict) -> None:
        fraction = training_fraction(event)
        if fraction is not None:
            self.trainingFraction = fraction
            self.etaSeconds = event.get("eta_s")
            self.peakMemoryMb = event.get("peak_memory_mb", self.peakMemoryMb)
        elif event.get("event") == "done" and event.get("model"):
            self.newModelPath = Path(event["model"])

    def _stepFraction(self) -> float:
        return self.trainingFraction if self.currentStep and self.currentStep.name == "fine-tuning" else 0.0

    @property
    def statusText(self) -> str:
        if self.running and self.currentStep.name == "fine-tuning" and self.etaSeconds is not None:
            memory = f", peak memory {self.peakMemoryMb / 1024:.1f} GB" if self.peakMemoryMb else ""
            return f"fine-tuning, about {formatDuration(self.etaSeconds)} left{memory}"
        return self.currentStep.name if self.running else self.status

    def comparison(self) -> dict:
        """Mean Dice per round of the simulated user on the held-back cases: {"before": [...], "after": [...]}
        (None where that evaluation did not run or wrote nothing)."""

        def dicePerRound(path: Path):
            try:
                methods = json.loads(path.read_text())["methods"]  # one: the model evaluated
                return next(iter(methods.values()))["dice_mean_per_round"]
            except (OSError, ValueError, KeyError, TypeError, StopIteration):
                return None

        return {"before": dicePerRound(self.beforeJson), "after": dicePerRound(self.afterJson)}

    @property
    def newModelIsBetter(self) -> bool:
        """Whether the new model's mean Dice over the rounds on the held-back cases beats the current
        model's: only then does the module offer it."""
        result = self.comparison()
        if result["before"] is None or result["after"] is None:
            return False
        return sum(result["after"]) / len(result["after"]) > sum(result["before"]) / len(result["before"])

    def comparisonText(self) -> str:
        result = self.comparison()
        if result["before"] is None or result["after"] is None:
            return "" if self.status == "finished" else f"Fine-tuning {self.status}."
        text = lambda values: " ".join(f"{v:.3f}" for v in values)  # noqa: E731
        verdict = ("The new model is better: use it for the next sessions?" if self.newModelIsBetter else
                   "The new model is not better on the held-back cases: the current model stays in use.")
        return (f"Held-back cases, mean Dice per round (simulated clicks at the deepest error): "
                f"current model {text(result['before'])}; new model {text(result['after'])}. {verdict}")


