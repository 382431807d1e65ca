"""The segment-editing session: one MECCA session (the engine's InteractiveSession) on a segment of
a segmentation node, with the user's clicks as markup points, the confidence overlay and the advice
regions as helper nodes, and the segment written back after every round.

The session owns the helper nodes it creates and removes them when it ends; it never deletes or
renames a node of the user's, and cancel restores the segment as it was.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import slicer
import vtk
from mecca import colours
from mecca.geometry import box_slices, ijk_from_kji, kji_from_ijk
from slicer.util import VTKObservationMixin

from .mrml import boxUnion, engineVolume, ijkToRasMatrix, ijkToWorld, labelmapImage, maskBox, worldToIjk

ROLE_ATTRIBUTE = "MECCASegment.Role"  # marks the nodes this module creates (never the user's)
CLICK_RECORD_ROLE = "clickRecord"


@dataclass(frozen=True)
class PlacedAdviceRegion:
    """A "click here next" region of the engine's session (mecca.advice.AdviceRegion) placed in the
    scene: rank 1 is where the model doubts its last actions most."""

    rank: int
    centreRas: tuple  # world RAS of a voxel inside the region, near its centre
    centreIjk: tuple  # the same voxel as (i, j, k) of the volume
    voxelCount: int
    volumeMl: float  # voxelCount times the volume's voxel size
    meanConfidence: float
    doubtfulMl: float  # the expected volume of wrong actions in it (the sum of 1 - confidence, in mL)

    @property
    def where(self) -> str:
        """The centre as Slicer's views label a point: R/L, A/P, S/I in mm."""
        return "  ".join(f"{(positive if value >= 0 else negative)} {abs(value):.1f}"
                         for value, positive, negative in zip(self.centreRas, "RAS", "LPI"))

    @property
    def tableRow(self) -> tuple[str, str, str, str]:
        """The module panel's advice table row: rank, where, volume (mL), likely wrong (mL)."""
        return str(self.rank), self.where, f"{self.volumeMl:.2f}", f"{self.doubtfulMl:.2f}"


@dataclass
class PlacedClick:
    """Where a click of the engine's session was placed, and the control point showing it."""

    engineClick: object  # the engine's Click (held, so its identity keys this record)
    ras: tuple  # world RAS where the user clicked
    pointId: str | None = None


class RoundStats(TypedDict):
    """What ``MECCASession.refine``, ``undo`` and ``redo`` return: the engine's RoundSummary as the
    module shows it (Slicer's camelCase; voxel positions in (i, j, k) order)."""

    round: int  # rounds now in effect
    clicks: int  # new in the round
    policySteps: int  # taken in the round
    seconds: float  # the whole update, as the user waits for it
    networkSeconds: float
    changedVoxels: int  # of the segment
    segmentVoxels: int
    roiIjk: tuple[tuple[int, int, int], tuple[int, int, int]]  # the round's region, lo and hi (exclusive)
    clicksNotFollowed: int  # clicks left on the wrong side of the segment (lostOnThisStructure)
    clicksInEffect: int


def lostOnThisStructure(stats: RoundStats) -> bool:
    """Whether a round's outcome says the model is not following the user (at least two clicks, and
    half of them, left on the wrong side of the segment): a Dice-free sign of a structure unlike
    the model's training, on which the module suggests the random-walker start or fine-tuning."""
    ignored = stats.get("clicksNotFollowed", 0)
    return ignored >= 2 and 2 * ignored >= stats.get("clicksInEffect", 0)


class MECCASession(VTKObservationMixin):
    """One interactive segmentation of one segment; made by MECCASegmentLogic.startSession.

    The segment is updated in place after every round, writing back only the voxels that changed.
    The session owns the helper nodes it creates (click points, confidence volume, advice regions)
    and removes them when it ends; it never deletes or renames a node of the user's.
    """

    def __init__(self, model, saveUndoState: Callable, volumeNode, segmentationNode, segmentId, roiNode=None,
                 createdSegment=False, createdSegmentation=False, startEstimate: str = "none"):
        """``model``: the engine's MeccaModel; ``saveUndoState(segmentationNode)`` makes the Segment
        Editor's undo step when the result is accepted."""
        from mecca.session import InteractiveSession

        VTKObservationMixin.__init__(self)
        self._saveUndoState = saveUndoState
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
        self._engine = InteractiveSession(engineVolume(volumeNode), model, roi=roi,
                                          initial_mask=self._original if self._original.any() else None,
                                          start_estimate=startEstimate)
        # the clicks' history is the engine session's (its rounds, pending clicks and redo); this only
        # remembers where each of its clicks was placed and which control point shows it
        self._placed: dict[int, PlacedClick] = {}
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
        from mecca.errors import InputError

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
        if node.IsA("vtkMRMLDisplayableNode"):
            node.CreateDefaultDisplayNodes()
        return node

    def _createClickNode(self, positive: bool):
        sign = "+" if positive else "-"
        node = self._addHelperNode("vtkMRMLMarkupsFiducialNode", f"MECCA {sign} clicks", f"clicks{sign}")
        node.SetMarkupLabelFormat(f"{sign}%d")
        display = node.GetDisplayNode()
        color = colours.POSITIVE_CLICK if positive else colours.NEGATIVE_CLICK
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
        display.SetAndObserveColorNodeID(self._createDoubtColors().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, colours.CONFIDENT)
        display.SetApplyThreshold(True)
        display.SetThreshold(0.0, colours.CONFIDENT)  # outside the round's ROI the confidence is 1: transparent
        return node

    def _createDoubtColors(self):
        """The overlay's colour table: the module's doubt ramp (mecca.colours), the montage's too."""
        table = self._addHelperNode("vtkMRMLColorTableNode", "MECCA doubt colours", "doubtColors")
        table.SetTypeToUser()
        ramp = colours.doubt_ramp()
        table.SetNumberOfColors(len(ramp))
        for index, rgb in enumerate(ramp):
            table.SetColor(index, *rgb, 1.0)
        return table

    # -- clicks --------------------------------------------------------------------------------
    def addClick(self, rasPoint, positive: bool = True) -> tuple:
        """Queue a click at a world RAS point for the next round; returns its voxel (i, j, k).

        + (positive) where the object should extend, - where it should retract. InputError when
        the point lies outside the volume or the ROI.
        """
        click = self._queueClick(rasPoint, positive)
        click.pointId = self._showClick(click)
        return ijk_from_kji(click.engineClick.position)

    def _queueClick(self, rasPoint, positive: bool, pointId: str | None = None) -> PlacedClick:
        from mecca.errors import InputError

        self._requireOpen()
        ras = np.asarray(rasPoint, dtype=float)
        if ras.shape != (3,) or not np.all(np.isfinite(ras)):
            raise InputError(f"a click needs a world RAS point (three finite numbers), got {rasPoint!r}")
        try:
            engineClick = self._engine.add_click(worldToIjk(self.volumeNode, ras), positive)
        except InputError as error:
            raise InputError(f"click at RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}): {error}") from error
        click = self._placed[id(engineClick)] = PlacedClick(engineClick, tuple(ras), pointId)
        return click

    def _showClick(self, click: PlacedClick) -> str:
        node = self._clickNodes[click.engineClick.positive]
        self._addingPoints = True
        try:
            index = node.AddControlPointWorld(vtk.vtkVector3d(*click.ras))
        finally:
            self._addingPoints = False
        node.SetNthControlPointLocked(index, True)
        return node.GetNthControlPointID(index)

    def _hideClick(self, click: PlacedClick) -> None:
        node = self._clickNodes[click.engineClick.positive]
        index = node.GetNthControlPointIndexByID(click.pointId)
        if index >= 0:
            node.RemoveNthControlPoint(index)

    @vtk.calldata_type(vtk.VTK_INT)
    def _onPointPlaced(self, caller, event, index: int) -> None:
        """A point placed with the + or - tool in a view becomes a click (or is removed with a message)."""
        from mecca.errors import InputError

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
        return len(self._engine.pending_clicks)

    @property
    def clickNodes(self) -> dict:
        """{True: the + click points node, False: the - one}."""
        return dict(self._clickNodes)

    # -- rounds --------------------------------------------------------------------------------
    def refine(self, stepsPerRound: int | str = 0, flipAverage: bool = False) -> RoundStats:
        """Run one MECCA round with every click so far and update the segment; ``stepsPerRound``
        policy steps with the same clicks (1: the paper's round; more reach a Dice in fewer rounds, at
        2-3 times the time: research/NOTEBOOK.md, "Steps per round"); 0 or "auto" (the
        parameter node's default): as many as the ROI's size allows within the round's time budget
        (3 up to 80^3 voxels). ``flipAverage``: each step averages the policy over the ROI and its
        three mirror images (about a Dice point more, 4 times the policy's time).

        Returns the round's RoundStats; undo() and redo() return the same keys. SessionError before
        the first click when there is no ROI and no starting segment.
        """
        self._requireOpen()
        start = time.perf_counter()
        self._engine.steps_per_round = "auto" if stepsPerRound in (0, "auto") else stepsPerRound
        self._engine.flip_average = flipAverage  # the engine refuses anything but a yes/no
        summary = self._engine.step()
        return self._afterChange(summary, start, networkSeconds=summary["seconds"])

    def undo(self) -> RoundStats:
        """Take back the last round (and the clicks not yet run). SessionError when there is none."""
        from mecca.errors import SessionError

        self._requireOpen()
        if not self._engine.can_undo:
            raise SessionError("nothing to undo")
        start = time.perf_counter()
        removed = self._engine.pending_clicks + self._engine.clicks_by_round[-1]
        summary = self._engine.undo()
        for click in removed:
            self._hideClick(self._placed[id(click)])
        return self._afterChange(summary, start)

    def redo(self) -> RoundStats:
        """Re-apply the last round taken back. SessionError when there is none."""
        from mecca.errors import SessionError

        self._requireOpen()
        if not self._engine.can_redo:
            raise SessionError("nothing to redo")
        start = time.perf_counter()
        summary = self._engine.redo()
        for engineClick in self._engine.clicks_by_round[-1]:
            click = self._placed[id(engineClick)]
            click.pointId = self._showClick(click)
        return self._afterChange(summary, start)

    def _afterChange(self, summary: dict, start: float, networkSeconds: float = 0.0) -> RoundStats:
        """Segment, confidence and advice after a round was run, taken back or re-applied.

        Only the round's region is read from the engine and written to the nodes: a large volume
        costs what its ROI costs.
        """
        box = (kji_from_ijk(summary["roi_lo_ijk"]), kji_from_ijk(summary["roi_hi_ijk"]))
        changed = self._writeSegment(self._engine.mask_region(box_slices(box)) > 0, box)
        self._updateConfidence()
        if self._adviceVisible:
            self._showAdvice()
        return RoundStats(round=self._engine.rounds, clicks=summary["clicks"], policySteps=summary["policy_steps"],
                          seconds=time.perf_counter() - start, networkSeconds=networkSeconds, changedVoxels=changed,
                          segmentVoxels=int(np.count_nonzero(self._mask)),
                          roiIjk=(tuple(summary["roi_lo_ijk"]), tuple(summary["roi_hi_ijk"])),
                          clicksNotFollowed=self._engine.clicks_not_followed,
                          clicksInEffect=sum(len(clicks) for clicks in self._engine.clicks_by_round))

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
            values[box_slices(self._confidenceBox)] = 1.0
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
        current = self._mask[box_slices(box)]
        leaving, joining = current & ~wanted, wanted & ~current
        changedBox = maskBox(leaving | joining)
        if changedBox is None:
            return 0
        lo = tuple(b + o for b, o in zip(changedBox[0], box[0]))
        inner = box_slices(changedBox)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        keep = labelmapImage(~leaving[inner], lo, self._ijkToSegmentation)
        add = labelmapImage(joining[inner], lo, self._ijkToSegmentation)
        if not (logic.SetBinaryLabelmapToSegment(keep, self.segmentationNode, self.segmentId, logic.MODE_MERGE_MIN,
                                                 keep.GetExtent())
                and logic.SetBinaryLabelmapToSegment(add, self.segmentationNode, self.segmentId,
                                                     logic.MODE_MERGE_MASK, add.GetExtent())):
            raise RuntimeError(f"could not write segment {self.segmentId} of {self.segmentationNode.GetName()}")
        outer = (lo, tuple(b + o for b, o in zip(changedBox[1], box[0])))
        self._mask[box_slices(outer)] = wanted[inner]
        self._touched = boxUnion(self._touched, outer)
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
        voxelMl = float(np.prod(self.volumeNode.GetSpacing())) / 1000.0
        return [PlacedAdviceRegion(region.rank, tuple(ijkToWorld(self.volumeNode, region.centre)),
                                   tuple(region.centre), region.voxel_count, region.voxel_count * voxelMl,
                                   region.mean_confidence, region.doubtful_voxels * voxelMl)
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
            segmentId = segmentation.AddEmptySegment(f"advice{region.rank}", str(region.rank), colours.ADVICE)
            image = labelmapImage(rankMap == region.rank, lo, ijkToRasMatrix(self.volumeNode))
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
        labels.GetDisplayNode().SetSelectedColor(*colours.ADVICE)
        labels.GetDisplayNode().SetColor(*colours.ADVICE)
        return outlines, labels

    # -- ending --------------------------------------------------------------------------------
    def accept(self) -> None:
        """Keep the result. It becomes one Segment Editor undo step: Undo there restores the segment
        as it was before the session. The clicks are recorded for fine-tuning (unlabelled case)."""
        self._requireOpen()
        if self._touched is not None:
            region = box_slices(self._touched)
            result = self._mask[region].copy()
            self._writeSegment(self._original[region], self._touched)
            self._saveUndoState(self.segmentationNode)
            self._writeSegment(result, self._touched)
        if any(self._engine.clicks_by_round):
            self._recordClicks()
        self._end()

    def cancel(self) -> None:
        """Restore the segment exactly as it was (remove it, or the segmentation, if the session made it)."""
        self._requireOpen()
        if self._touched is not None:
            self._writeSegment(self._original[box_slices(self._touched)], self._touched)
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
        node.SetParameter("clicks", json.dumps([{"ijk": list(ijk_from_kji(click.position)), "positive": click.positive,
                                                 "round": number}
                                                for number, clicks in enumerate(self._engine.clicks_by_round, start=1)
                                                for click in clicks]))

    def _end(self) -> None:
        self.stopPlacingClicks()
        self._restoreForeground()
        self.removeObservers()
        helpers = [*self._clickNodes.values(), self.confidenceVolumeNode,
                   self.confidenceVolumeNode.GetDisplayNode().GetColorNode(), *(self._adviceNodes or ())]
        for node in helpers:
            slicer.mrmlScene.RemoveNode(node)
        self.closed = True

    def _requireOpen(self) -> None:
        from mecca.errors import SessionError

        if self.closed:
            raise SessionError("this session has ended (accepted or cancelled); start a new one")


