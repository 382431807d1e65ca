"""MECCASegment: interactive 3D segmentation with MECCA in 3D Slicer.

A per-voxel reinforcement-learning policy nudges the foreground probability of every voxel of a
region of interest after each round of clicks; an action-confidence network says where it doubts
itself (confidence overlay) and which five regions a click would help most (advice).

The engine is the pure-Python ``MECCASegmentLib`` beside this file; this module moves data between
MRML nodes and the engine. ``MECCASegmentLogic`` is also a scripting API (Python console, batch):

    logic = MECCASegmentLogic()                        # bundled model; MECCASegmentLogic(modelPath=...)
    session = logic.startSession(volumeNode, segmentationNode, segmentId=None, roiNode=None)
    session.addClick(rasPoint, positive=True)          # world RAS, like every Slicer API
    session.refine()                                   # one round; updates the segment; returns stats
    session.confidenceVolumeNode                       # vtkMRMLScalarVolumeNode on the volume's grid
    session.adviceRegions                              # 5 regions: rank, RAS centre, voxels, mean confidence
    session.undo(); session.redo(); session.accept(); session.cancel()

Importing this file needs no Qt and no PyTorch: under the ``slicer-core`` wheel (no GUI) the Logic
works as in Slicer; PyTorch and the other engine dependencies are checked when a model is first
needed (``Resources/requirements.txt``).
"""

import json
import logging
import os
import queue
import re
import shutil
import sys
import threading
import time
import unittest
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import slicer
import vtk
import vtk.util.numpy_support
from slicer import vtkMRMLScalarVolumeNode
from slicer.util import VTKObservationMixin

try:  # Slicer loads non-core MRML classes into the slicer namespace only after modules are loaded
    from vtkSlicerMarkupsModuleMRMLPython import vtkMRMLMarkupsROINode
except ImportError:  # the slicer-core wheel has them in the slicer namespace
    from slicer import vtkMRMLMarkupsROINode

try:  # the Slicer application
    import qt
    from slicer.i18n import tr as _
    from slicer.i18n import translate
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # the slicer-core wheel (no Qt, no application): the Logic and the Test still run

    class ScriptedLoadableModule:
        """Needs the Slicer application; never instantiated without it."""

    class ScriptedLoadableModuleWidget:
        """Needs the Slicer application; never instantiated without it."""

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """What MECCASegmentTest uses of the real class, so it also runs under pytest."""

        def delayDisplay(self, message, msec=None):
            logging.info(message)

    def parameterNodeWrapper(cls):
        return cls

    def WithinRange(minimum, maximum):  # noqa: N802  (same name as the Slicer validator)
        return (minimum, maximum)

    def Choice(choices):  # noqa: N802
        return tuple(choices)


MODULE_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
DEVICES = ("auto", "cpu", "cuda")
START_ESTIMATES = ("none", "random-walker")  # the engine's session.START_ESTIMATES (the engine may not be installed yet)
AUTO_REFINE_DELAY_MS = 400  # clicks placed within this time of each other go into one round
CONFIDENT = 0.999  # confidence overlay: voxels at or above this are transparent (nothing to see there)
POSITIVE_COLOR = (0.2, 0.85, 0.2)
NEGATIVE_COLOR = (0.95, 0.25, 0.2)
ADVICE_COLOR = (1.0, 0.85, 0.0)
ROLE_ATTRIBUTE = "MECCASegment.Role"  # marks the nodes this module creates (never the user's)
CLICK_RECORD_ROLE = "clickRecord"


class DependencyError(RuntimeError):
    """A Python package the engine needs is missing; the message says which and how to install it."""


# -- dependencies --------------------------------------------------------------------------------
def _requirement(line: str):
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    return Requirement(line)


def missingRequirements(requirementsFile: Path = REQUIREMENTS_FILE) -> list[str]:
    """The lines of requirements.txt that the running Python does not satisfy (name or version)."""
    import importlib.metadata

    missing = []
    for line in requirementsFile.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = _requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def requireDependencies() -> None:
    """Raise DependencyError naming what is missing (scripts, batch use: nothing is installed)."""
    missing = missingRequirements()
    if missing:
        raise DependencyError(
            f"MECCASegment needs these Python packages: {', '.join(missing)}. Open the MECCASegment module "
            f"and press Start to install them, or run slicer.util.pip_install({' '.join(missing)!r}) in the "
            "Python console (PyTorch is best installed with the PyTorch extension's PyTorchUtils module).")


def installMissingRequirements(confirm: Callable[[str], bool]) -> bool:
    """Install what requirements.txt lists and is missing, once ``confirm(message)`` agrees.

    PyTorch comes from the PyTorch extension (PyTorchUtils) when it is installed, because it picks the
    build matching the GPU driver; otherwise from pip like the rest. Returns False when the user
    declines, True when everything is there; DependencyError when the installation did not work.
    """
    missing = missingRequirements()
    if not missing:
        return True
    if not confirm("MECCASegment needs these Python packages, which are not installed:\n\n  " + "\n  ".join(missing)
                   + "\n\nInstall them now? This downloads them from the internet and can take several minutes "
                     "(PyTorch is large)."):
        return False
    torchLines = [line for line in missing if _requirement(line).name == "torch"]
    pipLines = [line for line in missing if line not in torchLines]
    if torchLines:
        try:
            import PyTorchUtils
        except ImportError:
            pipLines = torchLines + pipLines
        else:
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=str(_requirement(torchLines[0]).specifier))
            if torch is None:
                raise DependencyError("PyTorch was not installed; see the PyTorch Utils module")
    if pipLines:
        slicer.util.pip_install(" ".join(pipLines))
    stillMissing = missingRequirements()
    if stillMissing:
        raise DependencyError(f"still missing after the installation: {', '.join(stillMissing)}; restart Slicer "
                              "and try again")
    return True


def resolveDevice(device: str) -> str:
    """"auto" -> "cuda" when PyTorch sees a GPU, else "cpu"; a clear error for an unusable choice."""
    import torch
    from MECCASegmentLib.io import InputError

    if device not in DEVICES:
        raise InputError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda: this PyTorch sees no CUDA GPU; choose cpu or auto")
    return device


# -- geometry ------------------------------------------------------------------------------------
def ijkToRasMatrix(volumeNode) -> np.ndarray:
    """The volume's IJK -> RAS matrix (its own frame, before any parent transform), 4 x 4."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def worldToIjk(volumeNode, rasPoint) -> np.ndarray:
    """World RAS point -> continuous (i, j, k) of the volume, through its parent transform (any kind)."""
    worldToVolume = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volumeNode.GetParentTransformNode(), worldToVolume)
    local = worldToVolume.TransformPoint([float(v) for v in rasPoint])
    return (np.linalg.inv(ijkToRasMatrix(volumeNode)) @ [*local, 1.0])[:3]


def ijkToWorld(volumeNode, ijk) -> np.ndarray:
    """(i, j, k) of the volume -> world RAS point, through its parent transform (any kind)."""
    local = (ijkToRasMatrix(volumeNode) @ [*(float(v) for v in ijk), 1.0])[:3]
    volumeToWorld = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(volumeNode.GetParentTransformNode(), None, volumeToWorld)
    return np.array(volumeToWorld.TransformPoint(local))


def engineVolume(volumeNode):
    """The volume's voxels (a copy) and geometry as the engine's Volume (ITK/LPS convention)."""
    from MECCASegmentLib.io import Volume

    matrix = ijkToRasMatrix(volumeNode)
    spacing = np.array(volumeNode.GetSpacing())
    rasToLps = np.diag([-1.0, -1.0, 1.0])
    direction = rasToLps @ matrix[:3, :3] / spacing
    return Volume(np.array(slicer.util.arrayFromVolume(volumeNode)), tuple(spacing), tuple(rasToLps @ matrix[:3, 3]),
                  tuple(direction.ravel()), volumeNode.GetName())


def _box(mask: np.ndarray):
    """(lo, hi) numpy-order bounding box of the True voxels, hi exclusive; None when there are none."""
    points = np.argwhere(mask)
    if points.size == 0:
        return None
    return tuple(int(v) for v in points.min(0)), tuple(int(v) for v in points.max(0) + 1)


def _boxUnion(a, b):
    if a is None:
        return b
    return tuple(map(min, a[0], b[0])), tuple(map(max, a[1], b[1]))


def _slices(box):
    return tuple(slice(lo, hi) for lo, hi in zip(*box))


def _labelmap(values: np.ndarray, lo, ijkToFrame: np.ndarray):
    """A vtkOrientedImageData holding ``values`` (numpy k, j, i) at voxel ``lo`` of a grid whose
    IJK -> (segmentation frame) matrix is ``ijkToFrame``."""
    image = slicer.vtkOrientedImageData()
    (k0, j0, i0), (k1, j1, i1) = lo, np.add(lo, values.shape) - 1
    image.SetExtent(i0, i1, j0, j1, k0, k1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = values.astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToFrame))
    return image


def _safeName(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "case"


def lostOnThisStructure(stats: dict) -> bool:
    """Whether a round's outcome says the model is not following the user (at least two clicks, and
    half of them, left on the wrong side of the segment): a Dice-free sign of a structure unlike
    the model's training, on which the module suggests the random-walker start or fine-tuning."""
    ignored = stats.get("clicksNotFollowed", 0)
    return ignored >= 2 and 2 * ignored >= stats.get("clicksInEffect", 0)


def formatDuration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def saveSegmentEditorUndoState(segmentationNode) -> bool:
    """Record the segmentation's current state as an undo step of the Segment Editor module.

    The Segment Editor keeps one undo history, for the segmentation selected in it, so that
    segmentation is selected there first. False without the Segment Editor GUI (batch, slicer-core).
    """
    try:
        segmentEditorWidget = slicer.modules.segmenteditor.widgetRepresentation().self()
    except AttributeError:
        return False
    segmentEditorWidget.selectParameterNode()  # absent after a scene close until the module is entered
    editor = segmentEditorWidget.editor
    if editor.segmentationNodeID() != segmentationNode.GetID():
        editor.setSegmentationNode(segmentationNode)
    editor.saveStateForUndo()
    return True


#
# MECCASegment
#
class MECCASegment(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MECCA Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MECCASegment developers"]
        self.parent.helpText = _("""
Interactive 3D segmentation with MECCA: place + clicks where the object should extend and - clicks where
it should retract; each round of clicks refines the segment. The confidence overlay shows where the
model doubts itself and the numbered advice regions where a click would help most.
See <a href="https://github.com/meccasegment/SlicerMECCASegment/blob/main/docs/slicer.md">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
MECCA (action-confidence-guided interactive segmentation with reinforcement learning). The bundled sample
is from the Medical Segmentation Decathlon (Task04 Hippocampus, CC-BY-SA 4.0).
""")


#
# MECCASegmentParameterNode
#
@parameterNodeWrapper
class MECCASegmentParameterNode:
    """Module settings, saved with the scene (the model file is an application setting instead:
    the model path field remembers it).

    stepsPerRound - policy steps per round with the same clicks; 0: automatic (3 on ROIs up to 80^3
        voxels, fewer on larger ones, within the round's time budget); 1 is the paper's round.
    flipAverage - average the policy over the ROI and its three mirror images: about a Dice point
        more, at 4 times the policy's time.
    device - where the networks run: auto (GPU when PyTorch sees one), cpu or cuda.
    startEstimate - what a new session's first round starts from: none (the model alone) or
        random-walker (the random walker's mask on the first clicks, refined by the model).
    fineTuneOutputFolder - where fine-tuning writes its data, log and new model.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    autoRefine: bool = True
    stepsPerRound: Annotated[int, WithinRange(0, 5)] = 0
    flipAverage: bool = False
    confidenceVisible: bool = True
    confidenceOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    adviceVisible: bool = True
    device: Annotated[str, Choice(DEVICES)] = "auto"
    startEstimate: Annotated[str, Choice(START_ESTIMATES)] = "none"
    fineTuneEpochs: Annotated[int, WithinRange(1, 500)] = 10
    fineTuneOutputFolder: Path = Path.home() / "MECCASegment"


#
# MECCASegmentWidget
#
class MECCASegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, click tools, display, model and fine-tuning."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.session = None
        self.fineTuning = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._caseChoices = []  # LabelledCase / InteractiveCase per row of the fine-tuning case list

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MECCASegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MECCASegmentLogic()

        self._refineTimer = qt.QTimer()
        self._refineTimer.setSingleShot(True)
        self._refineTimer.setInterval(AUTO_REFINE_DELAY_MS)
        self._refineTimer.connect("timeout()", self.onRefine)
        self._fineTuneTimer = qt.QTimer()
        self._fineTuneTimer.setInterval(500)
        self._fineTuneTimer.connect("timeout()", self.onFineTuneTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.positiveClickButton.connect("toggled(bool)", lambda on: self.onClickTool(True, on))
        self.ui.negativeClickButton.connect("toggled(bool)", lambda on: self.onClickTool(False, on))
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.redoButton.connect("clicked(bool)", self.onRedo)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.adviceTable.connect("cellClicked(int,int)", self.onAdviceRowClicked)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelChoiceChanged)
        self.ui.refreshCasesButton.connect("clicked(bool)", self.onRefreshCases)
        self.ui.startFineTuneButton.connect("clicked(bool)", self.onStartFineTuning)
        self.ui.cancelFineTuneButton.connect("clicked(bool)", self.onCancelFineTuning)
        self.ui.useNewModelButton.connect("clicked(bool)", self.onUseNewModel)

        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.fineTuning is not None:
            self.fineTuning.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interactionNode, interactionNode.InteractionModeChangedEvent, self.onInteractionModeChanged)

    def exit(self) -> None:
        self.ui.positiveClickButton.checked = False
        self.ui.negativeClickButton.checked = False
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        self.removeObserver(interactionNode, interactionNode.InteractionModeChangedEvent, self.onInteractionModeChanged)
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.session = None  # its nodes go with the scene
        self.updateButtons()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Settings changed (GUI or script): apply them to the logic and the running session."""
        parameters = self._parameterNode
        self.onModelChoiceChanged()
        if self.session is not None:
            self.session.setConfidenceVisible(parameters.confidenceVisible, parameters.confidenceOpacity)
            self.session.setAdviceVisible(parameters.adviceVisible)
        self.updateButtons()

    def onModelChoiceChanged(self, path: str = "") -> None:
        """An empty model path means the bundled model; either takes effect at the next session."""
        path = path or self.ui.modelPathLineEdit.currentPath
        device = self._parameterNode.device if self._parameterNode else "auto"
        self.logic.setModelChoice(path or None, device)

    def updateButtons(self) -> None:
        active = self.session is not None
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.startButton.enabled = ready and not active
        self.ui.startButton.toolTip = _("Start a session on the selected volume and segment") if ready \
            else _("Select an input volume first")
        for widget in (self.ui.inputVolumeSelector, self.ui.segmentSelector, self.ui.roiSelector,
                       self.ui.modelPathLineEdit, self.ui.deviceComboBox):
            widget.enabled = not active
        for widget in (self.ui.positiveClickButton, self.ui.negativeClickButton, self.ui.refineButton,
                       self.ui.acceptButton, self.ui.cancelButton):
            widget.enabled = active
        self.ui.undoButton.enabled = active and self.session.canUndo
        self.ui.redoButton.enabled = active and self.session.canRedo
        running = self.fineTuning is not None and self.fineTuning.running
        self.ui.startFineTuneButton.enabled = not running
        self.ui.cancelFineTuneButton.enabled = running

    # -- session -------------------------------------------------------------------------------
    def onStart(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start MECCA."), waitCursor=True):
            if not installMissingRequirements(slicer.util.confirmOkCancelDisplay):
                return
            parameters = self._parameterNode
            segmentationNode = self.ui.segmentSelector.currentNode()
            segmentId = self.ui.segmentSelector.currentSegmentID() or None
            self.session = self.logic.startSession(parameters.inputVolume, segmentationNode, segmentId, parameters.roi,
                                                   parameters.startEstimate)
            self.session.onClickAdded = self.onClickAdded
            self.session.onClickRejected = self.onClickRejected
            self.ui.segmentSelector.setCurrentNode(self.session.segmentationNode)
            self.ui.segmentSelector.setCurrentSegmentID(self.session.segmentId)
            self.session.setConfidenceVisible(parameters.confidenceVisible, parameters.confidenceOpacity)
            self.session.setAdviceVisible(parameters.adviceVisible)
            self.ui.modelInfoLabel.text = self.logic.modelDescription
            self.ui.statusLabel.text = _("Place + clicks where the object should grow, - clicks where it should shrink.")
            self.ui.positiveClickButton.checked = True
        self.updateButtons()

    def onClickTool(self, positive: bool, on: bool) -> None:
        """The + and - tools are exclusive; each puts the slice views in click-placement mode."""
        if self.session is None:
            return
        other = self.ui.negativeClickButton if positive else self.ui.positiveClickButton
        if on:
            wasBlocked = other.blockSignals(True)
            other.checked = False
            other.blockSignals(wasBlocked)
            self.session.startPlacingClicks(positive)
        elif not other.checked:
            self.session.stopPlacingClicks()

    def onInteractionModeChanged(self, caller, event) -> None:
        """Leaving placement mode elsewhere (Esc, toolbar) releases the click tool buttons."""
        if caller.GetCurrentInteractionMode() != caller.Place:
            for button in (self.ui.positiveClickButton, self.ui.negativeClickButton):
                wasBlocked = button.blockSignals(True)
                button.checked = False
                button.blockSignals(wasBlocked)

    def onClickAdded(self) -> None:
        self.ui.statusLabel.text = _("{count} click(s) waiting for the next round.").format(
            count=self.session.pendingClickCount)
        if self._parameterNode and self._parameterNode.autoRefine:
            self._refineTimer.start()  # restarts: a quick series of clicks makes one round

    def onClickRejected(self, message: str) -> None:
        self.ui.statusLabel.text = message

    def onRefine(self) -> None:
        self._refineTimer.stop()
        if self.session is None:
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("The MECCA round failed."), waitCursor=True):
            self.showRound(self.session.refine(node.stepsPerRound if node else 0, node.flipAverage if node else False))
        self.updateButtons()

    def onUndo(self) -> None:
        self._runHistoryStep(self.session.undo)

    def onRedo(self) -> None:
        self._runHistoryStep(self.session.redo)

    def _runHistoryStep(self, step) -> None:
        from MECCASegmentLib.session import SessionError

        self._refineTimer.stop()
        try:
            self.showRound(step())
        except SessionError as error:
            self.ui.statusLabel.text = str(error)
        self.updateButtons()

    def showRound(self, stats: dict) -> None:
        self.ui.statusLabel.text = _("Round {round} (policy steps: {steps}): {seconds:.2f} s, {changed} voxels "
                                     "changed, segment {voxels} voxels.").format(
            round=stats["round"], steps=stats["policySteps"], seconds=stats["seconds"],
            changed=stats["changedVoxels"], voxels=stats["segmentVoxels"])
        if lostOnThisStructure(stats):
            self.ui.statusLabel.text += " " + _(
                "{ignored} of your {clicks} clicks are not followed: this structure may be unlike what the model was "
                "trained on. Try 'First round from: random-walker' for the next session, or fine-tune the model on "
                "a few segmented cases (Fine-tuning, below).").format(ignored=stats["clicksNotFollowed"],
                                                                      clicks=stats["clicksInEffect"])
        regions = self.session.adviceRegions if self._parameterNode.adviceVisible else []
        self.ui.adviceTable.setRowCount(len(regions))
        for row, region in enumerate(regions):
            for column, text in enumerate((str(region.rank), str(region.voxelCount), f"{region.meanConfidence:.2f}")):
                self.ui.adviceTable.setItem(row, column, qt.QTableWidgetItem(text))

    def onAdviceRowClicked(self, row: int, column: int) -> None:
        """Centre the slice views on the chosen advice region."""
        region = self.session.adviceRegions[row]
        slicer.modules.markups.logic().JumpSlicesToLocation(*region.centreRas, True)

    def onAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not accept the result."), waitCursor=True):
            self.session.accept()
            self.ui.statusLabel.text = _("Accepted. Segment Editor > Undo returns to the segment as it was.")
        self._endSession()

    def onCancel(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not restore the segment."), waitCursor=True):
            self.session.cancel()
            self.ui.statusLabel.text = _("Cancelled; the segment is as it was.")
        self._endSession()

    def _endSession(self) -> None:
        self._refineTimer.stop()
        self.session = None
        self.ui.adviceTable.setRowCount(0)
        for button in (self.ui.positiveClickButton, self.ui.negativeClickButton):
            button.checked = False
        self.updateButtons()

    # -- fine-tuning ---------------------------------------------------------------------------
    def onRefreshCases(self) -> None:
        """List the scene's volume + segment pairs (labelled) and the recorded click sessions."""
        self.ui.fineTuneCasesList.clear()
        self.ui.heldOutComboBox.clear()
        self.ui.heldOutComboBox.addItem(_("(none: no before/after comparison)"))
        labelled = self.logic.labelledCases()
        interactive = self.logic.interactiveCases()
        self._caseChoices = labelled + interactive
        for case in self._caseChoices:
            item = qt.QListWidgetItem(case.description)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            self.ui.fineTuneCasesList.addItem(item)
        for case in labelled:
            self.ui.heldOutComboBox.addItem(case.description)
        self.ui.heldOutComboBox.currentIndex = 1 if labelled else 0

    def onStartFineTuning(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start fine-tuning."), waitCursor=True):
            if not installMissingRequirements(slicer.util.confirmOkCancelDisplay):
                return
            chosen = [case for row, case in enumerate(self._caseChoices)
                      if self.ui.fineTuneCasesList.item(row).checkState() == qt.Qt.Checked]
            labelled = [case for case in chosen if isinstance(case, LabelledCase)]
            interactive = [case for case in chosen if isinstance(case, InteractiveCase)]
            heldOutIndex = self.ui.heldOutComboBox.currentIndex - 1
            labelledAll = [case for case in self._caseChoices if isinstance(case, LabelledCase)]
            heldOut = labelledAll[heldOutIndex] if heldOutIndex >= 0 else None
            folder = self.ui.fineTuneDatasetPathLineEdit.currentPath
            parameters = self._parameterNode
            self.fineTuning = self.logic.startFineTuning(
                parameters.fineTuneOutputFolder, labelled, interactive, [folder] if folder else [], heldOut,
                parameters.fineTuneEpochs, parameters.device)
            self.ui.fineTuneLog.clear()
            self.ui.fineTuneLog.appendPlainText(_("Working in {folder}").format(folder=self.fineTuning.folder))
            self.ui.fineTuneProgressBar.setRange(0, 1000)
            self.ui.fineTuneProgressBar.value = 0
            self.ui.fineTuneResultLabel.text = ""
            self.ui.useNewModelButton.enabled = False
            self._fineTuneTimer.start()
        self.updateButtons()

    def onFineTuneTimer(self) -> None:
        """Show what the background processes reported since the last tick (never waits for them)."""
        run = self.fineTuning
        for event in run.poll():
            if event["event"] == "epoch":
                self.ui.fineTuneLog.appendPlainText(_("epoch {epoch} done").format(epoch=event.get("epoch")))
            elif "message" in event:
                self.ui.fineTuneLog.appendPlainText(str(event["message"]))
        self.ui.fineTuneProgressBar.value = int(1000 * run.fraction)
        self.ui.fineTuneEtaLabel.text = run.statusText
        if not run.running:
            self._fineTuneTimer.stop()
            self.ui.fineTuneResultLabel.text = run.comparisonText()
            self.ui.useNewModelButton.enabled = run.status == "finished" and run.newModelIsBetter
            self.updateButtons()

    def onCancelFineTuning(self) -> None:
        if self.fineTuning is not None:
            self.fineTuning.cancel()

    def onUseNewModel(self) -> None:
        self.ui.modelPathLineEdit.currentPath = str(self.fineTuning.newModelPath)
        self.ui.modelInfoLabel.text = _("Next sessions use {path}").format(path=self.fineTuning.newModelPath)


#
# MECCASegmentLogic
#
@dataclass(frozen=True)
class AdviceRegion:
    """A "click here next" region: rank 1 is where the model doubts its last actions most."""

    rank: int
    centreRas: tuple  # world RAS of a voxel inside the region, near its centre
    centreIjk: tuple  # the same voxel as (i, j, k) of the volume
    voxelCount: int
    meanConfidence: float


@dataclass
class _Click:
    ras: tuple  # world RAS where the user clicked
    ijk: tuple  # voxel (i, j, k) it selects
    positive: bool
    pointId: str | None = None  # control point showing it


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


class MECCASegmentLogic(ScriptedLoadableModuleLogic):
    """Interactive MECCA segmentation on MRML nodes, and fine-tuning on local cases.

    Usable without the GUI (Python console, batch scripts, tests); see the module docstring.
    The model loads on first use, so creating the logic costs nothing.
    """

    def __init__(self, modelPath=None, device: str = "auto") -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._model = None
        self.modelPath = Path(modelPath) if modelPath else None
        self.device = device
        self.saveUndoState = saveSegmentEditorUndoState  # (segmentationNode) -> bool; replaceable

    def getParameterNode(self):
        return MECCASegmentParameterNode(super().getParameterNode())

    # -- model ---------------------------------------------------------------------------------
    @property
    def modelFile(self) -> Path:
        """The model file in use: the chosen one, else the bundled one."""
        if self.modelPath is not None:
            return self.modelPath
        from MECCASegmentLib.resources import DEFAULT_MODEL, resource_path

        return resource_path(*DEFAULT_MODEL)

    def setModelChoice(self, modelPath=None, device: str = "auto") -> None:
        """Use another model file (None: bundled) or device from the next session on."""
        modelPath = Path(modelPath) if modelPath else None
        if (modelPath, device) != (self.modelPath, self.device):
            self.modelPath, self.device, self._model = modelPath, device, None

    @property
    def model(self):
        """The loaded model (loads it, with a version check, on first use)."""
        if self._model is None:
            requireDependencies()
            from MECCASegmentLib.checkpoint import load_model

            self._model = load_model(self.modelFile, device=resolveDevice(self.device), precision="auto")
        return self._model

    @property
    def modelDescription(self) -> str:
        model = self.model
        name = model.metadata.get("name") or self.modelFile.name
        return f"{name} on {model.device}"

    # -- sessions ------------------------------------------------------------------------------
    def startSession(self, volumeNode, segmentationNode=None, segmentId: str | None = None, roiNode=None,
                     startEstimate: str = "none"):
        """Start segmenting ``segmentId`` of ``segmentationNode`` on ``volumeNode``.

        An existing segment is the starting mask (nothing of it is lost: cancel restores it); with no
        segment a new one is added, with no segmentation a new one is created. ``roiNode`` (markups
        ROI) fixes the region the networks see; without it the region grows from the clicks.
        ``startEstimate``: what the first round starts from when there is no existing segment: "none"
        (the model alone) or "random-walker" (its mask on the first clicks, refined by the model).
        """
        from MECCASegmentLib.io import InputError

        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.GetImageData() is None:
            raise InputError("select an input volume (a scalar volume with image data)")
        if startEstimate not in START_ESTIMATES:
            raise InputError(f"the first round starts from one of {', '.join(START_ESTIMATES)}, got {startEstimate!r}")
        if segmentationNode is None and segmentId is not None:
            raise InputError(f"segment {segmentId!r} given without its segmentation node")
        if segmentationNode is not None:
            segmentation = segmentationNode.GetSegmentation()
            if segmentId is not None and segmentation.GetSegment(segmentId) is None:
                raise InputError(f"{segmentationNode.GetName()} has no segment with ID {segmentId!r}")
            binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
            if segmentation.GetNumberOfSegments() and segmentation.GetSourceRepresentationName() != binary:
                raise InputError(f"{segmentationNode.GetName()} stores {segmentation.GetSourceRepresentationName()}; "
                                 "MECCA edits binary labelmaps: change its source representation in the "
                                 "Segmentations module first")
        self.model  # noqa: B018  (load it now: a missing or wrong model file changes nothing in the scene)
        createdSegmentation = segmentationNode is None
        if createdSegmentation:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} segmentation"))
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        segmentation = segmentationNode.GetSegmentation()
        if not segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()):
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        createdSegment = segmentId is None
        if createdSegment:
            segmentId = segmentation.AddEmptySegment("", segmentation.GenerateUniqueSegmentID("MECCA"))
        try:
            return MECCASession(self, volumeNode, segmentationNode, segmentId, roiNode,
                                createdSegment=createdSegment, createdSegmentation=createdSegmentation,
                                startEstimate=startEstimate)
        except Exception:
            if createdSegmentation:
                slicer.mrmlScene.RemoveNode(segmentationNode)
            elif createdSegment:
                segmentation.RemoveSegment(segmentId)
            raise

    # -- fine-tuning ---------------------------------------------------------------------------
    def labelledCases(self) -> list:
        """Every segment of the scene's segmentations paired with its reference volume."""
        cases = []
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        for segmentationNode in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            volumeNode = segmentationNode.GetNodeReference(role)
            if segmentationNode.GetAttribute(ROLE_ATTRIBUTE) or volumeNode is None:
                continue
            segmentation = segmentationNode.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                cases.append(LabelledCase(volumeNode, segmentationNode, segmentation.GetNthSegmentID(index)))
        return cases

    def interactiveCases(self) -> list:
        """The click records of the sessions accepted in this scene whose volume still exists."""
        return [InteractiveCase(node) for node in slicer.util.getNodesByClass("vtkMRMLScriptedModuleNode")
                if node.GetAttribute(ROLE_ATTRIBUTE) == CLICK_RECORD_ROLE and node.GetNodeReference("volume")]

    def exportTrainingData(self, folder, labelledCases, interactiveCases=(), heldOutCase=None) -> TrainingData:
        """Write the cases as MSD-layout folders for ``mecca train`` / ``mecca evaluate``.

        ``labelled/``: image + label per case; ``interactive/``: image + the recorded clicks (RAS, per
        round; the format of ``mecca segment --clicks``); ``heldout/``: the held-back labelled case,
        kept out of training for the before/after comparison. Volumes are written in their own frame
        (parent transforms are not baked in); labels are resampled onto the volume's grid.
        """
        from MECCASegmentLib.io import InputError, write_json, write_volume

        folder = Path(folder)
        training = [case for case in labelledCases if case != heldOutCase]
        names = {}

        def caseName(text):
            base = _safeName(text)
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
            write_json(_msdManifest(root.name, entries), root / "dataset.json")
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
            write_json(_msdManifest(root.name, entries), root / "dataset.json")
            return root

        return TrainingData(
            folder,
            writeLabelled(folder / "labelled", training) if training else None,
            writeInteractive(folder / "interactive", list(interactiveCases)) if interactiveCases else None,
            writeLabelled(folder / "heldout", [heldOutCase]) if heldOutCase is not None else None)

    def trainCommand(self, data: TrainingData, outputModel, epochs: int, device: str = "auto",
                     datasetFolders=()) -> list[str]:
        """``mecca train --init <current model>`` on the exported and the given MSD folders."""
        datasets = [d for d in (data.labelledDir, *map(Path, datasetFolders)) if d is not None]
        arguments = ["train"]
        for dataset in datasets:
            arguments += ["--dataset", dataset]
        if data.interactiveDir is not None:
            arguments += ["--unlabeled", data.interactiveDir]
        # no validation split: the held-back case is the comparison, and local datasets are small
        arguments += ["--init", self.modelFile, "--out", outputModel, "--epochs", int(epochs), "--device", device,
                      "--validation-fraction", 0, "--progress", "jsonl"]
        return meccaCommand(*arguments)

    @staticmethod
    def evaluateCommand(datasetDir, modelFile, jsonPath) -> list[str]:
        """``mecca evaluate`` of one model with the simulated user on a dataset folder."""
        return meccaCommand("evaluate", "--dataset", datasetDir, "--model", modelFile, "--methods", "mecca",
                            "--json", jsonPath)

    def startFineTuning(self, outputFolder, labelledCases, interactiveCases=(), datasetFolders=(), heldOutCase=None,
                        epochs: int = 10, device: str = "auto"):
        """Export the cases, then in background processes: evaluate the current model on the
        held-back case, fine-tune it, evaluate the new model. Returns the running FineTuningRun."""
        from MECCASegmentLib.io import InputError

        for datasetFolder in datasetFolders:
            if not (Path(datasetFolder) / "dataset.json").exists():
                raise InputError(f"{datasetFolder}: no dataset.json; expected an MSD-layout folder")
        if heldOutCase is None:  # the new model is offered only once it beats the current one on a case it never saw
            if len(labelledCases) < 2:
                raise InputError("fine-tuning needs a labelled case to hold back, on which the new model is checked "
                                 "against the current one before it is offered: choose one, or select at least two "
                                 "labelled cases (the last one is then held back)")
            heldOutCase = labelledCases[-1]
        if not datasetFolders and not [case for case in labelledCases if case != heldOutCase]:
            raise InputError("fine-tuning needs at least one labelled case besides the held-back one "
                             "(a volume + segment pair, or an MSD folder)")
        folder = Path(outputFolder) / time.strftime("finetune-%Y%m%d-%H%M%S")
        data = self.exportTrainingData(folder / "data", labelledCases, interactiveCases, heldOutCase)
        run = FineTuningRun(self, data, folder / "mecca-finetuned.safetensors", epochs, device, datasetFolders)
        run.start()
        return run


def _msdManifest(name: str, entries: list[dict]) -> dict:
    return {"name": name, "description": "exported from 3D Slicer by MECCASegment", "tensorImageSize": "3D",
            "modality": {"0": "image"}, "labels": {"0": "background", "1": "foreground"},
            "numTraining": len(entries), "training": entries, "test": []}


class MECCASession(VTKObservationMixin):
    """One interactive segmentation of one segment; made by MECCASegmentLogic.startSession.

    The segment is updated in place after every round, writing back only the voxels that changed.
    The session owns the helper nodes it creates (click points, confidence volume, advice regions)
    and removes them when it ends; it never deletes or renames a node of the user's.
    """

    def __init__(self, logic, volumeNode, segmentationNode, segmentId, roiNode=None, createdSegment=False,
                 createdSegmentation=False, startEstimate: str = "none"):
        from MECCASegmentLib.session import InteractiveSession

        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.volumeNode = volumeNode
        self.segmentationNode = segmentationNode
        self.segmentId = segmentId
        self._createdSegment = createdSegment
        self._createdSegmentation = createdSegmentation
        self._ijkToSegmentation = self._segmentationFrame()
        self._original = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
        self._mask = self._original.copy()  # what the segment holds now, on the volume's grid
        self._touched = None  # box of every voxel written so far (numpy k, j, i order)
        self._confidenceBox = None  # where the confidence volume holds the last round's values
        roi = self._roiBox(roiNode) if roiNode is not None else None
        self._engine = InteractiveSession(engineVolume(volumeNode), logic.model, roi=roi,
                                          initial_mask=self._original if self._original.any() else None,
                                          start_estimate=startEstimate)
        self._rounds: list[list[_Click]] = []
        self._pending: list[_Click] = []
        self._redo: list[list[_Click]] = []
        self._addingPoints = False
        self.closed = False
        self.onClickAdded: Callable[[], None] | None = None  # a click was placed in a view
        self.onClickRejected: Callable[[str], None] | None = None  # ... and refused (message)
        self._adviceVisible = False
        self._adviceNodes = None
        self._previousForeground = None
        self._clickNodes = {positive: self._createClickNode(positive) for positive in (True, False)}
        self.confidenceVolumeNode = self._createConfidenceNode()

    # -- setup helpers -------------------------------------------------------------------------
    def _segmentationFrame(self) -> np.ndarray:
        """Volume IJK -> segmentation-node coordinates (they differ when their parent transforms do)."""
        from MECCASegmentLib.io import InputError

        volumeToSegmentation = vtk.vtkMatrix4x4()
        if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
                self.volumeNode.GetParentTransformNode(), self.segmentationNode.GetParentTransformNode(),
                volumeToSegmentation):
            raise InputError(f"{self.volumeNode.GetName()} and {self.segmentationNode.GetName()} are related by a "
                             "non-linear transform; put them under the same transform (or harden it) first")
        return slicer.util.arrayFromVTKMatrix(volumeToSegmentation) @ ijkToRasMatrix(self.volumeNode)

    def _roiBox(self, roiNode):
        """(i, j, k) box [lo, hi) of the voxels whose centres lie in the ROI box (an ROI rotated
        against the volume's axes gives the voxel box around it)."""
        objectToWorld = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
        half = np.array(roiNode.GetSize()) / 2
        corners = np.array([worldToIjk(self.volumeNode, (objectToWorld @ [x, y, z, 1.0])[:3])
                            for x in (-half[0], half[0]) for y in (-half[1], half[1]) for z in (-half[2], half[2])])
        tolerance = 1e-3  # voxels: a centre on the box face is inside despite rounding through transforms
        lo = np.ceil(corners.min(0) - tolerance).astype(int)
        hi = np.floor(corners.max(0) + tolerance).astype(int) + 1
        return tuple(int(v) for v in lo), tuple(int(v) for v in hi)

    def _addHelperNode(self, className: str, name: str, role: str):
        node = slicer.mrmlScene.AddNewNodeByClass(className, slicer.mrmlScene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.CreateDefaultDisplayNodes()
        return node

    def _createClickNode(self, positive: bool):
        sign = "+" if positive else "-"
        node = self._addHelperNode("vtkMRMLMarkupsFiducialNode", f"MECCA {sign} clicks", f"clicks{sign}")
        node.SetMarkupLabelFormat(f"{sign}%d")
        display = node.GetDisplayNode()
        color = POSITIVE_COLOR if positive else NEGATIVE_COLOR
        display.SetSelectedColor(*color)
        display.SetColor(*color)
        self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self._onPointPlaced)
        return node

    def _createConfidenceNode(self):
        node = self._addHelperNode("vtkMRMLScalarVolumeNode", f"{self.volumeNode.GetName()} MECCA confidence",
                                   "confidence")
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRasMatrix(self.volumeNode)))
        node.SetAndObserveTransformNodeID(self.volumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(node, self._engine.confidence_map())
        display = node.GetDisplayNode()
        colorID = next((c for c in ("vtkMRMLColorTableNodeFileViridis.txt", "vtkMRMLColorTableNodeRainbow")
                        if slicer.mrmlScene.GetNodeByID(c)), None)
        if colorID:
            display.SetAndObserveColorNodeID(colorID)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)
        display.SetThreshold(0.0, CONFIDENT)  # outside the round's ROI the confidence is 1: transparent
        return node

    # -- clicks --------------------------------------------------------------------------------
    def addClick(self, rasPoint, positive: bool = True) -> tuple:
        """Queue a click at a world RAS point for the next round; returns its voxel (i, j, k).

        + (positive) where the object should extend, - where it should retract. InputError when
        the point lies outside the volume or the ROI.
        """
        click = self._queueClick(rasPoint, positive)
        click.pointId = self._showClick(click)
        return click.ijk

    def _queueClick(self, rasPoint, positive: bool, pointId: str | None = None) -> _Click:
        from MECCASegmentLib.io import InputError

        self._requireOpen()
        ras = np.asarray(rasPoint, dtype=float)
        if ras.shape != (3,) or not np.all(np.isfinite(ras)):
            raise InputError(f"a click needs a world RAS point (three finite numbers), got {rasPoint!r}")
        try:
            engineClick = self._engine.add_click(worldToIjk(self.volumeNode, ras), positive)
        except InputError as error:
            raise InputError(f"click at RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}): {error}") from error
        click = _Click(tuple(ras), tuple(int(v) for v in engineClick.position[::-1]), bool(positive), pointId)
        self._pending.append(click)
        self._redo.clear()  # as in the engine: a new click ends what could be redone
        return click

    def _showClick(self, click: _Click) -> str:
        node = self._clickNodes[click.positive]
        self._addingPoints = True
        try:
            index = node.AddControlPointWorld(vtk.vtkVector3d(*click.ras))
        finally:
            self._addingPoints = False
        node.SetNthControlPointLocked(index, True)
        return node.GetNthControlPointID(index)

    def _hideClick(self, click: _Click) -> None:
        node = self._clickNodes[click.positive]
        index = node.GetNthControlPointIndexByID(click.pointId)
        if index >= 0:
            node.RemoveNthControlPoint(index)

    @vtk.calldata_type(vtk.VTK_INT)
    def _onPointPlaced(self, caller, event, index: int) -> None:
        """A point placed with the + or - tool in a view becomes a click (or is removed with a message)."""
        from MECCASegmentLib.io import InputError

        if self._addingPoints or self.closed:
            return
        position = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(index, position)
        positive = caller.GetID() == self._clickNodes[True].GetID()
        try:
            self._queueClick(position, positive, caller.GetNthControlPointID(index))
        except InputError as error:
            caller.RemoveNthControlPoint(index)
            if self.onClickRejected:
                self.onClickRejected(str(error))
            return
        caller.SetNthControlPointLocked(index, True)
        if self.onClickAdded:
            self.onClickAdded()

    def startPlacingClicks(self, positive: bool) -> None:
        """Put the views in persistent point placement for the + (or -) click points."""
        self._requireOpen()
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selectionNode.SetActivePlaceNodeID(self._clickNodes[positive].GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetPlaceModePersistence(1)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)

    def stopPlacingClicks(self) -> None:
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        if selectionNode.GetActivePlaceNodeID() in [node.GetID() for node in self._clickNodes.values()]:
            interactionNode = slicer.app.applicationLogic().GetInteractionNode()
            interactionNode.SetCurrentInteractionMode(interactionNode.ViewTransform)

    @property
    def pendingClickCount(self) -> int:
        return len(self._pending)

    @property
    def clickNodes(self) -> dict:
        """{True: the + click points node, False: the - one}."""
        return dict(self._clickNodes)

    # -- rounds --------------------------------------------------------------------------------
    def refine(self, stepsPerRound: int | str = 0, flipAverage: bool = False) -> dict:
        """Run one MECCA round with every click so far and update the segment; ``stepsPerRound``
        policy steps with the same clicks (1: the paper's round; more reach a Dice in fewer rounds, at
        2-3 times the time: docs/results.md, "Steps per round"); 0 or "auto" (the
        parameter node's default): as many as the ROI's size allows within the round's time budget
        (3 up to 80^3 voxels). ``flipAverage``: each step averages the policy over the ROI and its
        three mirror images (about a Dice point more, 4 times the policy's time).

        Returns round (rounds now in effect), clicks (new in the round), policySteps (taken in the
        round), seconds (the whole update as the user waits for it), networkSeconds, changedVoxels
        (of the segment), segmentVoxels and roiIjk ((i, j, k) lo, hi of the round's region). undo()
        and redo() return the same keys. SessionError before the first click when there is no ROI and
        no starting segment.
        """
        self._requireOpen()
        start = time.perf_counter()
        self._engine.steps_per_round = "auto" if stepsPerRound in (0, "auto") else stepsPerRound
        self._engine.flip_average = flipAverage  # the engine refuses anything but a yes/no
        summary = self._engine.step()
        self._rounds.append(self._pending)
        self._pending = []
        return self._afterChange(summary, start, networkSeconds=summary["seconds"])

    def undo(self) -> dict:
        """Take back the last round (and the clicks not yet run). SessionError when there is none."""
        from MECCASegmentLib.session import SessionError

        self._requireOpen()
        if not self._engine.can_undo:
            raise SessionError("nothing to undo")
        start = time.perf_counter()
        summary = self._engine.undo()
        for click in self._pending + self._rounds[-1]:
            self._hideClick(click)
        self._pending = []
        self._redo.append(self._rounds.pop())
        return self._afterChange(summary, start)

    def redo(self) -> dict:
        """Re-apply the last round taken back. SessionError when there is none."""
        from MECCASegmentLib.session import SessionError

        self._requireOpen()
        if not self._engine.can_redo:
            raise SessionError("nothing to redo")
        start = time.perf_counter()
        summary = self._engine.redo()
        clicks = self._redo.pop()
        for click in clicks:
            click.pointId = self._showClick(click)
        self._rounds.append(clicks)
        return self._afterChange(summary, start)

    def _afterChange(self, summary: dict, start: float, networkSeconds: float = 0.0) -> dict:
        """Segment, confidence and advice after a round was run, taken back or re-applied.

        Only the round's region is read from the engine and written to the nodes: a large volume
        costs what its ROI costs.
        """
        box = (tuple(reversed(summary["roi_lo_ijk"])), tuple(reversed(summary["roi_hi_ijk"])))
        changed = self._writeSegment(self._engine.mask_region(_slices(box)) > 0, box)
        self._updateConfidence()
        if self._adviceVisible:
            self._showAdvice()
        return {"round": self._engine.rounds, "clicks": summary["clicks"], "policySteps": summary["policy_steps"],
                "seconds": time.perf_counter() - start,
                "networkSeconds": networkSeconds, "changedVoxels": changed,
                "segmentVoxels": int(np.count_nonzero(self._mask)),
                "roiIjk": (tuple(summary["roi_lo_ijk"]), tuple(summary["roi_hi_ijk"])),
                "clicksNotFollowed": self._engine.clicks_not_followed,
                "clicksInEffect": sum(len(clicks) for clicks in self._engine.clicks_by_round)}

    @property
    def canUndo(self) -> bool:
        return not self.closed and self._engine.can_undo

    @property
    def canRedo(self) -> bool:
        return not self.closed and self._engine.can_redo

    @property
    def rounds(self) -> int:
        return self._engine.rounds

    # -- the segment ---------------------------------------------------------------------------
    def _updateConfidence(self) -> None:
        """Write the last round's confidence into the confidence volume: its region, and 1 (nothing
        to doubt) where the previous region was."""
        values = slicer.util.arrayFromVolume(self.confidenceVolumeNode)
        if self._confidenceBox is not None:
            values[_slices(self._confidenceBox)] = 1.0
        region = self._engine.confidence_region()
        self._confidenceBox = None
        if region is not None:
            slices, confidence = region
            values[slices] = confidence
            self._confidenceBox = tuple(s.start for s in slices), tuple(s.stop for s in slices)
        slicer.util.arrayFromVolumeModified(self.confidenceVolumeNode)

    def _writeSegment(self, wanted: np.ndarray, box) -> int:
        """Make the segment equal ``wanted`` (the volume grid's numpy ``box``, (lo, hi)), writing
        only the bounding box of the voxels that change. Returns how many changed.

        Done as the Segment Editor does: remove the voxels that leave the segment (merge-min), then
        paint those that join it (merge-mask). Other segments, also in a shared labelmap layer, and
        everything outside the changed box stay as they are.
        """
        current = self._mask[_slices(box)]
        leaving, joining = current & ~wanted, wanted & ~current
        changedBox = _box(leaving | joining)
        if changedBox is None:
            return 0
        lo = tuple(b + o for b, o in zip(changedBox[0], box[0]))
        inner = _slices(changedBox)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        keep = _labelmap(~leaving[inner], lo, self._ijkToSegmentation)
        add = _labelmap(joining[inner], lo, self._ijkToSegmentation)
        if not (logic.SetBinaryLabelmapToSegment(keep, self.segmentationNode, self.segmentId, logic.MODE_MERGE_MIN,
                                                 keep.GetExtent())
                and logic.SetBinaryLabelmapToSegment(add, self.segmentationNode, self.segmentId,
                                                     logic.MODE_MERGE_MASK, add.GetExtent())):
            raise RuntimeError(f"could not write segment {self.segmentId} of {self.segmentationNode.GetName()}")
        outer = (lo, tuple(b + o for b, o in zip(changedBox[1], box[0])))
        self._mask[_slices(outer)] = wanted[inner]
        self._touched = _boxUnion(self._touched, outer)
        return int(np.count_nonzero(leaving | joining))

    # -- display -------------------------------------------------------------------------------
    def setConfidenceVisible(self, visible: bool, opacity: float = 0.4) -> None:
        """Show the confidence map as the slice views' foreground layer (the previous one comes back
        when hidden or when the session ends)."""
        self._requireOpen()
        composite = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
        if visible:
            if self._previousForeground is None and composite is not None:
                self._previousForeground = (composite.GetForegroundVolumeID(), composite.GetForegroundOpacity())
            slicer.util.setSliceViewerLayers(foreground=self.confidenceVolumeNode, foregroundOpacity=opacity)
        else:
            self._restoreForeground()

    def _restoreForeground(self) -> None:
        if self._previousForeground is not None:
            foreground, opacity = self._previousForeground
            slicer.util.setSliceViewerLayers(foreground=foreground, foregroundOpacity=opacity)
            self._previousForeground = None

    def setAdviceVisible(self, visible: bool) -> None:
        """Show the advice regions as numbered outlines in the slice views."""
        self._requireOpen()
        self._adviceVisible = visible
        if visible:
            self._showAdvice()
        elif self._adviceNodes is not None:
            for node in self._adviceNodes:
                node.GetDisplayNode().SetVisibility(False)

    @property
    def adviceRegions(self) -> list:
        """The last round's five "click here next" regions, least confident first (empty before
        the first round)."""
        return [AdviceRegion(region.rank, tuple(ijkToWorld(self.volumeNode, region.centre)), tuple(region.centre),
                             region.voxel_count, region.mean_confidence)
                for region in self._engine.advice_regions]

    def _showAdvice(self) -> None:
        regions = self.adviceRegions
        if not regions:
            return
        if self._adviceNodes is None:
            self._adviceNodes = self._createAdviceNodes()
        outlines, labels = self._adviceNodes
        slices, rankMap = self._engine.advice_region()
        lo = tuple(s.start for s in slices)
        segmentation = outlines.GetSegmentation()
        segmentation.RemoveAllSegments()
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        for region in regions:
            segmentId = segmentation.AddEmptySegment(f"advice{region.rank}", str(region.rank), ADVICE_COLOR)
            image = _labelmap(rankMap == region.rank, lo, ijkToRasMatrix(self.volumeNode))
            logic.SetBinaryLabelmapToSegment(image, outlines, segmentId, logic.MODE_REPLACE)
        labels.RemoveAllControlPoints()
        for region in regions:
            labels.AddControlPointWorld(vtk.vtkVector3d(*region.centreRas), str(region.rank))
        for node in self._adviceNodes:
            node.GetDisplayNode().SetVisibility(True)

    def _createAdviceNodes(self):
        outlines = self._addHelperNode("vtkMRMLSegmentationNode", "MECCA advice regions", "adviceRegions")
        outlines.SetAndObserveTransformNodeID(self.volumeNode.GetTransformNodeID())
        outlines.SetReferenceImageGeometryParameterFromVolumeNode(self.volumeNode)
        display = outlines.GetDisplayNode()
        display.SetVisibility2DFill(False)
        display.SetVisibility2DOutline(True)
        display.SetSliceIntersectionThickness(2)
        display.SetVisibility3D(False)
        labels = self._addHelperNode("vtkMRMLMarkupsFiducialNode", "MECCA advice", "adviceLabels")
        labels.SetLocked(True)
        labels.GetDisplayNode().SetSelectedColor(*ADVICE_COLOR)
        labels.GetDisplayNode().SetColor(*ADVICE_COLOR)
        return outlines, labels

    # -- ending --------------------------------------------------------------------------------
    def accept(self) -> None:
        """Keep the result. It becomes one Segment Editor undo step: Undo there restores the segment
        as it was before the session. The clicks are recorded for fine-tuning (unlabelled case)."""
        self._requireOpen()
        if self._touched is not None:
            region = _slices(self._touched)
            result = self._mask[region].copy()
            self._writeSegment(self._original[region], self._touched)
            self.logic.saveUndoState(self.segmentationNode)
            self._writeSegment(result, self._touched)
        if any(self._rounds):
            self._recordClicks()
        self._end()

    def cancel(self) -> None:
        """Restore the segment exactly as it was (remove it, or the segmentation, if the session made it)."""
        self._requireOpen()
        if self._touched is not None:
            self._writeSegment(self._original[_slices(self._touched)], self._touched)
        if self._createdSegmentation:
            slicer.mrmlScene.RemoveNode(self.segmentationNode)
        elif self._createdSegment:
            self.segmentationNode.GetSegmentation().RemoveSegment(self.segmentId)
        self._end()

    def _recordClicks(self) -> None:
        node = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLScriptedModuleNode", slicer.mrmlScene.GenerateUniqueName(f"MECCA clicks {self.volumeNode.GetName()}"))
        node.SetAttribute(ROLE_ATTRIBUTE, CLICK_RECORD_ROLE)
        node.SetNodeReferenceID("volume", self.volumeNode.GetID())
        node.SetNodeReferenceID("segmentation", self.segmentationNode.GetID())
        node.SetParameter("segmentId", self.segmentId)
        node.SetParameter("clicks", json.dumps([{"ijk": list(click.ijk), "positive": click.positive, "round": number}
                                                for number, clicks in enumerate(self._rounds, start=1)
                                                for click in clicks]))

    def _end(self) -> None:
        self.stopPlacingClicks()
        self._restoreForeground()
        self.removeObservers()
        helpers = [*self._clickNodes.values(), self.confidenceVolumeNode, *(self._adviceNodes or ())]
        for node in helpers:
            slicer.mrmlScene.RemoveNode(node)
        self.closed = True

    def _requireOpen(self) -> None:
        from MECCASegmentLib.session import SessionError

        if self.closed:
            raise SessionError("this session has ended (accepted or cancelled); start a new one")


#
# Fine-tuning in background processes
#
def pythonExecutable() -> str:
    """The Python that runs the engine's command line: Slicer's own (PythonSlicer) in Slicer."""
    return shutil.which("PythonSlicer") or sys.executable


def meccaCommand(*arguments) -> list[str]:
    """The ``mecca`` command line (``python -m MECCASegmentLib.cli``, which needs no installed script)."""
    return [pythonExecutable(), "-m", "MECCASegmentLib.cli", *(str(a) for a in arguments)]


def parseProgressLine(line: str) -> dict:
    """A line of ``mecca ... --progress jsonl`` output -> its event dict; any other text (warnings,
    tracebacks) -> {"event": "log", "message": line}."""
    text = line.strip()
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return {"event": "log", "message": text}
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return {"event": "log", "message": text}
    return event


def trainingFraction(event: dict) -> float | None:
    """How much of the training a "step" event says is done (0..1); None for other events."""
    if event.get("event") != "step":
        return None
    try:
        done = (int(event["epoch"]) - 1) * int(event["steps"]) + int(event["step"])
        return min(max(done / (int(event["epochs"]) * int(event["steps"])), 0.0), 1.0)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


@dataclass
class JobStep:
    name: str
    command: list
    weight: float = 1.0  # share of the progress bar


class BackgroundJob:
    """Runs its steps' commands one after another, each in its own process.

    Nothing here waits: a thread reads each process's output, and ``poll()`` (from a Qt timer in
    the GUI, a loop in scripts) returns the events since the last call, parsed with
    parseProgressLine, plus {"event": "stepStarted" | "failed" | "cancelled" | "finished", "message"}.
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
                events.append(dict(parseProgressLine(payload), step=self.currentStep.name))
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


def _engineEnvironment() -> dict:
    """PYTHONPATH for the engine's command line: the folder holding MECCASegmentLib first."""
    return {"PYTHONPATH": os.pathsep.join([str(MODULE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}


class FineTuningRun(BackgroundJob):
    """Evaluate the current model on the held-back case, fine-tune it, evaluate the new model."""

    def __init__(self, logic, data: TrainingData, newModelPath: Path, epochs: int, device: str, datasetFolders=()):
        folder = data.folder.parent
        self.folder = folder
        self.newModelPath = Path(newModelPath)
        self.beforeJson = folder / "evaluation-current-model.json"
        self.afterJson = folder / "evaluation-new-model.json"
        steps = [JobStep("fine-tuning", logic.trainCommand(data, self.newModelPath, epochs, device, datasetFolders), 10.0)]
        if data.heldOutDir is not None:
            steps.insert(0, JobStep("evaluating the current model on the held-back case",
                                    logic.evaluateCommand(data.heldOutDir, logic.modelFile, self.beforeJson)))
            steps.append(JobStep("evaluating the new model on the held-back case",
                                 logic.evaluateCommand(data.heldOutDir, self.newModelPath, self.afterJson)))
        super().__init__(steps, _engineEnvironment())
        self.trainingFraction = 0.0
        self.etaSeconds = None
        self.peakMemoryMb = None  # the training process's peak resident memory so far

    def onEvent(self, event: dict) -> None:
        fraction = trainingFraction(event)
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
        """Dice per round of the simulated user on the held-back case: {"before": [...], "after": [...]}
        (None where that evaluation did not run or wrote nothing)."""

        def dicePerRound(path: Path):
            try:
                return json.loads(path.read_text())["methods"]["mecca"]["dice_mean_per_round"]
            except (OSError, ValueError, KeyError, TypeError):
                return None

        return {"before": dicePerRound(self.beforeJson), "after": dicePerRound(self.afterJson)}

    @property
    def newModelIsBetter(self) -> bool:
        """Whether the new model's mean Dice over the rounds on the held-back case beats the current
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
                   "The new model is not better on the held-back case: the current model stays in use.")
        return (f"Held-back case, Dice per round: current model {text(result['before'])}; "
                f"new model {text(result['after'])}. {verdict}")


#
# MECCASegmentTest
#
class MECCASegmentTest(ScriptedLoadableModuleTest):
    """The pytest scenario (Testing/test_slicer_logic.py) inside Slicer, on the bundled sample:
    a session with clicks as RAS points, a round, undo/redo, cancel and accept."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MECCASegment_session()

    modelPath = None  # None: the bundled model (pytest runs this test with a small untrained one)

    def test_MECCASegment_session(self):
        from MECCASegmentLib.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path

        self.delayDisplay("Loading the bundled sample")
        volumeNode = slicer.util.loadVolume(str(resource_path(*SAMPLE_IMAGE)))
        labelNode = slicer.util.loadVolume(str(resource_path(*SAMPLE_LABEL)), {"labelmap": True, "show": False})
        label = slicer.util.arrayFromVolume(labelNode) > 0
        inside = np.argwhere(label)
        centre = inside[np.argmin(((inside - inside.mean(0)) ** 2).sum(1))]  # (k, j, i) inside the object

        self.delayDisplay("A round from one + click")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = MECCASegmentLogic(modelPath=self.modelPath)
        session = logic.startSession(volumeNode, segmentationNode)
        session.addClick(ijkToWorld(volumeNode, centre[::-1]), positive=True)
        stats = session.refine()
        segment = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, session.segmentId, volumeNode)
        self.assertEqual(stats["round"], 1)
        self.assertEqual(int(segment.sum()), stats["segmentVoxels"])
        self.assertTrue(np.allclose(ijkToRasMatrix(session.confidenceVolumeNode), ijkToRasMatrix(volumeNode)))
        self.assertEqual(len(session.adviceRegions), 5)

        self.delayDisplay("Undo, redo, cancel")
        session.undo()
        self.assertFalse(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, session.segmentId, volumeNode).any())
        session.redo()
        self.assertTrue(np.array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, session.segmentId, volumeNode), segment))
        session.cancel()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 0)

        self.delayDisplay("Accept keeps the result")
        session = logic.startSession(volumeNode, segmentationNode)
        session.addClick(ijkToWorld(volumeNode, centre[::-1]), positive=True)
        session.refine()
        session.accept()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(len(logic.interactiveCases()), 1)
        self.delayDisplay("Test passed")
