"""MECCASegment: interactive 3D segmentation with MECCA in 3D Slicer.

A per-voxel reinforcement-learning policy nudges the foreground probability of every voxel of a
region of interest after each round of clicks; an action-confidence network says where it doubts
itself (confidence overlay) and in which five regions it doubts itself most (advice).

The engine is the pure-Python ``mecca`` beside this file; this module moves data between
MRML nodes and the engine. ``MECCASegmentLogic`` is also a scripting API (Python console, batch):

    logic = MECCASegmentLogic()                        # bundled model; MECCASegmentLogic(modelPath=...)
    session = logic.startSession(volumeNode, segmentationNode, segmentId=None, roiNode=None)
    session.addClick(rasPoint, positive=True)          # world RAS, like every Slicer API
    session.refine()                                   # one round; updates the segment; returns stats
    session.confidenceVolumeNode                       # vtkMRMLScalarVolumeNode on the volume's grid
    session.adviceRegions                              # 5 regions: rank, RAS centre, voxels, mL, mL likely wrong
    session.undo(); session.redo(); session.accept(); session.cancel()

Importing this file needs no Qt and no PyTorch: under the ``slicer-core`` wheel (no GUI) the Logic
works as in Slicer; PyTorch and the other engine dependencies are checked when a model is first
needed (``Resources/requirements.txt``).
"""

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import slicer
import vtk
from mecca import colours
from mecca.defaults import DEVICES, START_ESTIMATES
from MECCASegmentLib.dependencies import installMissingRequirements, requireDependencies
from MECCASegmentLib.editing import CLICK_RECORD_ROLE, ROLE_ATTRIBUTE, MECCASession, RoundStats, lostOnThisStructure
from MECCASegmentLib.finetuning import (
    FineTuningRun,
    InteractiveCase,
    LabelledCase,
    exportCases,
)
from MECCASegmentLib.headless import (
    Choice,
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
    WithinRange,
    _,
    parameterNodeWrapper,
    qt,
    translate,
)
from MECCASegmentLib.mrml import ijkToRasMatrix, ijkToWorld, saveSegmentEditorUndoState
from slicer import vtkMRMLScalarVolumeNode
from slicer.util import VTKObservationMixin

try:  # Slicer loads non-core MRML classes into the slicer namespace only after modules are loaded
    from vtkSlicerMarkupsModuleMRMLPython import vtkMRMLMarkupsROINode
except ImportError:  # the slicer-core wheel has them in the slicer namespace
    from slicer import vtkMRMLMarkupsROINode

AUTO_REFINE_DELAY_MS = 400  # clicks placed within this time of each other go into one round


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
model doubts itself and the numbered advice regions where it doubts itself most.
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
    fineTuneEpochs: Annotated[int, WithinRange(0, 500)] = 0  # 0: mecca train's choice by structure (10 or 40)
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
        from mecca.errors import SessionError

        self._refineTimer.stop()
        try:
            self.showRound(step())
        except SessionError as error:
            self.ui.statusLabel.text = str(error)
        self.updateButtons()

    def showRound(self, stats: RoundStats) -> None:
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
            for column, text in enumerate(region.tableRow):
                self.ui.adviceTable.setItem(row, column, qt.QTableWidgetItem(text))
            rank = self.ui.adviceTable.item(row, 0)  # a swatch: the rank in its colour in the views, on a dark scan
            rank.setForeground(qt.QColor.fromRgbF(*colours.ADVICE))
            rank.setBackground(qt.QColor("black"))
        self.ui.adviceTable.resizeColumnsToContents()

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
        self.ui.heldOutComboBox.addItem(_("(automatic: the last of every four labelled cases checked)"))
        labelled = self.logic.labelledCases()
        interactive = self.logic.interactiveCases()
        self._caseChoices = labelled + interactive
        for case in self._caseChoices:
            item = qt.QListWidgetItem(case.description)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            # accepted sessions (no label) have not helped in our measurements: the user opts in
            item.setCheckState(qt.Qt.Checked if isinstance(case, LabelledCase) else qt.Qt.Unchecked)
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
            heldOut = [labelledAll[heldOutIndex]] if heldOutIndex >= 0 else None
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
        from mecca.resources import DEFAULT_MODEL, resource_path

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
            from mecca.checkpoint import load_model, resolve_device

            self._model = load_model(self.modelFile, device=resolve_device(self.device), precision="auto")
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
        from mecca.errors import InputError

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
            return MECCASession(self.model, self.saveUndoState, volumeNode, segmentationNode, segmentId, roiNode,
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

    def startFineTuning(self, outputFolder, labelledCases, interactiveCases=(), datasetFolders=(), heldOutCases=None,
                        epochs: int = 0, device: str = "auto"):
        """Export the cases, then in background processes: evaluate the current model on the
        held-back cases (None: one in four of the labelled cases, the last ones, at least one),
        fine-tune it (``epochs`` 0: as many as ``mecca train`` chooses for the structure), evaluate
        the new model. Returns the running FineTuningRun."""
        from mecca.errors import InputError

        for datasetFolder in datasetFolders:
            if not (Path(datasetFolder) / "dataset.json").exists():
                raise InputError(f"{datasetFolder}: no dataset.json; expected an MSD-layout folder")
        if heldOutCases is None:  # the new model is offered only once it beats the current one on cases it never saw
            if len(labelledCases) < 2:
                raise InputError("fine-tuning needs a labelled case to hold back, on which the new model is checked "
                                 "against the current one before it is offered: choose one, or select at least two "
                                 "labelled cases (the last one is then held back)")
            heldOutCases = labelledCases[-max(1, len(labelledCases) // 4):]
        if not datasetFolders and not [case for case in labelledCases if case not in heldOutCases]:
            raise InputError("fine-tuning needs at least one labelled case besides the held-back one "
                             "(a volume + segment pair, or an MSD folder)")
        folder = Path(outputFolder) / time.strftime("finetune-%Y%m%d-%H%M%S")
        data = exportCases(folder / "data", labelledCases, interactiveCases, heldOutCases)
        run = FineTuningRun(self.modelFile, data, folder / "mecca-finetuned.safetensors", epochs, device, datasetFolders)
        run.start()
        return run


#
# MECCASegmentTest
#
class MECCASegmentTest(ScriptedLoadableModuleTest):
    """The pytest scenario (Testing/slicer_glue/test_logic.py) inside Slicer, on the bundled sample:
    a session with clicks as RAS points, a round, undo/redo, cancel and accept."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MECCASegment_session()

    modelPath = None  # None: the bundled model (pytest runs this test with a small untrained one)

    def test_MECCASegment_session(self):
        from mecca.geometry import ijk_from_kji
        from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path

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
        session.addClick(ijkToWorld(volumeNode, ijk_from_kji(centre)), positive=True)
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
        session.addClick(ijkToWorld(volumeNode, ijk_from_kji(centre)), positive=True)
        session.refine()
        session.accept()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(len(logic.interactiveCases()), 1)
        self.delayDisplay("Test passed")
