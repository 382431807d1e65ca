"""The Slicer module's Logic (its scripting API) on Slicer's real core, headless (slicer-core wheel).

Every test runs on a real hippocampus MRI, the bundled sample (hippocampus_001, shipped with the
module, so every clone runs them), loaded as a volume node: as stored (identity RAS directions), on an oblique anisotropic grid, and on
that grid under a parent transform. Tests that compare the Slicer path with the engine need no
trained model; the Dice check against the label needs the bundled one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import slicer.util
import vtk
from headless_slicer import headless_slicer, scene  # noqa: F401  (pytest fixtures)

ROOT = Path(__file__).resolve().parents[2]
ROUNDS, CLICKS_PER_ROUND, SEED = 3, 3, 0

from mecca import colours, progress  # noqa: E402
from MECCASegmentLib import dependencies, editing, finetuning, mrml  # noqa: E402
from MECCASegmentLib.mrml import ijkToRasMatrix, ijkToWorld, worldToIjk  # noqa: E402

import MECCASegment as module  # noqa: E402  (conftest puts MECCASegment/ on sys.path)
from MECCASegment import MECCASegmentLogic  # noqa: E402


# -- fixtures ------------------------------------------------------------------------------------
def _bundled_model() -> Path | None:
    from mecca.resources import DEFAULT_MODEL, resource_path

    try:
        return resource_path(*DEFAULT_MODEL)
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The bundled model when it exists, else a small untrained one (enough to compare paths)."""
    from mecca.checkpoint import save_model
    from mecca.networks import MeccaModel, NetworkConfig

    bundled = _bundled_model()
    if bundled is not None:
        return bundled
    path = tmp_path_factory.mktemp("model") / "untrained.safetensors"
    return save_model(MeccaModel.create(NetworkConfig(width=8, confidence_width=8), seed=0), path)


@pytest.fixture
def logic(model_file) -> MECCASegmentLogic:
    return MECCASegmentLogic(modelPath=model_file, device="cpu")


def _oblique_matrix() -> np.ndarray:
    """IJK -> RAS with rotated, permuted axes and anisotropic spacing (a tilted acquisition)."""
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    permutation = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ permutation * np.array([0.9, 1.1, 1.3])
    matrix[:3, 3] = (12.0, -40.0, 7.0)
    return matrix


def _add_parent_transform(node) -> None:
    angle = np.deg2rad(15)
    transform = np.eye(4)
    transform[:3, :3] = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    transform[:3, 3] = (5.0, -3.0, 8.0)
    transformNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "tilt")
    transformNode.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(transform))
    node.SetAndObserveTransformNodeID(transformNode.GetID())


def _sample_paths() -> tuple[Path, Path]:
    from mecca.resources import SAMPLE_IMAGE, SAMPLE_LABEL, resource_path

    return resource_path(*SAMPLE_IMAGE), resource_path(*SAMPLE_LABEL)


@pytest.fixture(scope="module")
def sample_case():
    """The bundled sample (hippocampus_001, in the bundled model's validation split) and its label map."""
    from mecca.io import read_volume

    image_path, label_path = _sample_paths()
    return read_volume(image_path), read_volume(label_path).array


@pytest.fixture(params=["as stored", "oblique grid", "oblique grid + parent transform"])
def scan(request, scene, sample_case):
    """(volume node, binary label (k, j, i)) of the bundled sample in one of three geometries."""
    image, label = sample_case
    if request.param == "as stored":
        volumeNode = slicer.util.loadVolume(str(_sample_paths()[0]))
        assert np.array_equal(slicer.util.arrayFromVolume(volumeNode), image.array)
    else:
        volumeNode = slicer.util.addVolumeFromArray(image.array, ijkToRAS=_oblique_matrix(), name="hippocampus_001")
        if request.param.endswith("parent transform"):
            _add_parent_transform(volumeNode)
    return volumeNode, label > 0


@pytest.fixture(scope="module")
def label_values(sample_case) -> np.ndarray:
    """The sample's label map: 1 = anterior, 2 = posterior hippocampus."""
    return sample_case[1]


def _roi_around(volumeNode, lo, hi):
    """A markups ROI along the volume's axes holding exactly the voxel centres lo..hi-1 ((i, j, k))."""
    matrix = ijkToRasMatrix(volumeNode)
    spacing = np.array(volumeNode.GetSpacing())
    objectToNode = np.eye(4)
    objectToNode[:3, :3] = matrix[:3, :3] / spacing
    objectToNode[:3, 3] = (matrix @ [*((np.array(lo) + np.array(hi) - 1) / 2.0), 1.0])[:3]
    roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roiNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    roiNode.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
    roiNode.SetSize(*((np.array(hi) - 1 - np.array(lo)) * spacing))
    return roiNode


def _segment(session) -> np.ndarray:
    return slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentationNode, session.segmentId, session.volumeNode) > 0


def _simulated_rounds(session, label, rounds=ROUNDS, stepsPerRound=0, flipAverage=False):
    """The engine's seeded simulated user, clicking through the scripting API in world RAS; checks
    that each round reports the policy steps it took."""
    from mecca.users import SimulatedUser

    user, masks = SimulatedUser(label, seed=SEED), []
    for round_index in range(rounds):
        for click in user.clicks(_segment(session), CLICKS_PER_ROUND, round_index):
            ijk = click.position[::-1]
            assert session.addClick(ijkToWorld(session.volumeNode, ijk), click.positive) == tuple(ijk)
        stats = session.refine(stepsPerRound, flipAverage)
        assert stats["policySteps"] == (stepsPerRound or 3)  # 0, the parameter node's default: automatic, 3 here
        masks.append(_segment(session))
    return masks


def _shared_layer_segmentation(volumeNode, label_values):
    """A user's segmentation: the anterior (1) and posterior (2) hippocampus in one shared labelmap layer."""
    labelNode = slicer.util.addVolumeFromArray(label_values.astype(np.uint8), ijkToRAS=ijkToRasMatrix(volumeNode),
                                               name="labels", nodeClassName="vtkMRMLLabelMapVolumeNode")
    labelNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hippocampus")
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
    slicer.mrmlScene.RemoveNode(labelNode)
    segmentation = segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2 and segmentation.GetNumberOfLayers() == 1
    return segmentationNode


def _all_segments(segmentationNode, volumeNode) -> dict:
    segmentation = segmentationNode.GetSegmentation()
    return {segmentation.GetNthSegmentID(n): slicer.util.arrayFromSegmentBinaryLabelmap(
        segmentationNode, segmentation.GetNthSegmentID(n), volumeNode) for n in range(segmentation.GetNumberOfSegments())}


# -- import and geometry -------------------------------------------------------------------------
def test_module_imports_without_qt_or_torch():
    """The module loads in slicer-core (no Qt) and loads no heavy package (torch) at import."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import MECCASegment; "
            "assert 'torch' not in sys.modules and 'qt' not in sys.modules, sorted(sys.modules); "
            "print(MECCASegment.MECCASegmentLogic.__name__)")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "MECCASegment")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MECCASegmentLogic"


def test_dependencies_are_checked_against_requirements_txt(tmp_path, monkeypatch):
    """Missing or too old packages are found; nothing is installed without consent, and a script gets
    a message naming what is missing and how to install it."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.0\nnumpy<1.0  # too new here\nno-such-package-mecca>=1\n")
    assert dependencies.missingRequirements(requirements) == ["numpy<1.0", "no-such-package-mecca>=1"]
    assert dependencies.missingRequirements() == []  # this environment has what Resources/requirements.txt lists
    assert dependencies.installMissingRequirements(lambda message: pytest.fail("asked although nothing is missing"))
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: ["torch>=2.1,<3"])
    with pytest.raises(dependencies.DependencyError, match=r"torch>=2.1,<3.*pip_install"):
        dependencies.requireDependencies()
    questions = []
    assert dependencies.installMissingRequirements(lambda message: questions.append(message) or False) is False
    assert "torch>=2.1,<3" in questions[0]
    assert "several GB" in questions[0] and "PyTorch extension" in questions[0]  # not installed under slicer-core
    monkeypatch.setattr(dependencies, "missingRequirements", lambda: ["numpy>=99"])
    assert dependencies.installMissingRequirements(lambda message: questions.append(message) or False) is False
    assert "PyTorch" not in questions[1]


def test_ras_points_map_to_the_voxels_slicer_shows(scan):
    """World RAS <-> IJK honours the IJKToRAS directions, the spacing and a parent transform."""
    volumeNode, label = scan
    worldToVolume = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volumeNode.GetParentTransformNode(), worldToVolume)
    rasToIjk = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(rasToIjk)
    for ijk in [(0, 0, 0), (38, 49, 39), (17, 27, 16)]:
        ras = ijkToWorld(volumeNode, ijk)
        local = worldToVolume.TransformPoint(ras)
        assert np.allclose(rasToIjk.MultiplyPoint([*local, 1.0])[:3], ijk, atol=1e-6)
        assert np.allclose(worldToIjk(volumeNode, ras), ijk, atol=1e-6)
    if volumeNode.GetParentTransformNode() is None and np.allclose(ijkToRasMatrix(volumeNode)[:3, :3], np.eye(3)):
        assert np.allclose(ijkToWorld(volumeNode, (1, 2, 3)), np.add(volumeNode.GetOrigin(), (1, 2, 3)))


# -- rounds ----------------------------------------------------------------------------------------
def test_rounds_through_slicer_equal_the_engine_on_the_same_clicks(scan, logic):
    """Clicks as RAS points, an ROI node, rounds written into a segment: the segment read back from
    the segmentation node equals the engine's own result, round by round, in every geometry."""
    from mecca.checkpoint import load_model
    from mecca.geometry import label_box
    from mecca.harness import simulate_mecca

    volumeNode, label = scan
    lo, hi = label_box(label)
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    session = logic.startSession(volumeNode, segmentationNode, roiNode=_roi_around(volumeNode, lo, hi))
    masks = _simulated_rounds(session, label)
    reference, _ = simulate_mecca(load_model(logic.modelFile, precision="auto"), mrml.engineVolume(volumeNode), label, ROUNDS,
                                  CLICKS_PER_ROUND, seed=SEED, keep_masks=True)
    for mask, expected in zip(masks, reference.masks):
        assert np.array_equal(mask, expected > 0)
    assert session.rounds == ROUNDS


def test_steps_per_round_reach_the_engine(scan, logic):
    """The module's "Steps per round": rounds of three policy steps written into the segment equal
    the engine's rounds with the same setting, and differ from rounds of one step; the parameter
    node's 0 is automatic."""
    from mecca.checkpoint import load_model
    from mecca.geometry import label_box
    from mecca.harness import MeccaMethod, simulate

    volumeNode, label = scan
    lo, hi = label_box(label)
    sessions = [logic.startSession(volumeNode, slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name),
                                   roiNode=_roi_around(volumeNode, lo, hi)) for name in ("three steps", "one step")]
    three_steps = _simulated_rounds(sessions[0], label, rounds=2, stepsPerRound=3)
    one_step = _simulated_rounds(sessions[1], label, rounds=2, stepsPerRound=1)
    method = MeccaMethod(load_model(logic.modelFile, precision="auto"), steps_per_round=3)
    reference = simulate(method, mrml.engineVolume(volumeNode), label, 2, CLICKS_PER_ROUND, seed=SEED, keep_masks=True)
    for mask, expected in zip(three_steps, reference.masks):
        assert np.array_equal(mask, expected > 0)
    assert not np.array_equal(three_steps[0], one_step[0]) and sessions[0].rounds == 2


def test_average_over_flips_reaches_the_engine(scan, logic):
    """The module's "Average over flips": the round written into the segment equals the engine's
    round with flip_average, and differs from a plain round."""
    from mecca.checkpoint import load_model
    from mecca.geometry import label_box
    from mecca.harness import MeccaMethod, simulate

    volumeNode, label = scan
    lo, hi = label_box(label)
    sessions = [logic.startSession(volumeNode, slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name),
                                   roiNode=_roi_around(volumeNode, lo, hi)) for name in ("flips", "plain")]
    averaged = _simulated_rounds(sessions[0], label, rounds=1, flipAverage=True)
    plain = _simulated_rounds(sessions[1], label, rounds=1)
    method = MeccaMethod(load_model(logic.modelFile, precision="auto"), flip_average=True)
    reference = simulate(method, mrml.engineVolume(volumeNode), label, 1, CLICKS_PER_ROUND, seed=SEED, keep_masks=True)
    assert np.array_equal(averaged[0], reference.masks[0] > 0)
    assert not np.array_equal(averaged[0], plain[0])
    # a value that is not a yes/no (a script passing the text "false") is refused, the segment kept
    from mecca.errors import InputError

    with pytest.raises(InputError, match="on .True. or off"):
        sessions[1].refine(0, "false")
    assert sessions[1].rounds == 1 and np.array_equal(_segment(sessions[1]), plain[0])


def test_dice_against_the_label_with_the_bundled_model(scene, sample_case):
    """Five rounds of three simulated clicks on the held-out case improve the segment to the bundled
    model's level (about 0.8 at round 5 on this case with the bundled model; an untrained model gets < 0.2)."""
    from mecca.geometry import label_box
    from mecca.metrics import dice

    if _bundled_model() is None:
        pytest.skip("the bundled model Resources/Models/mecca.safetensors is not there yet (training runs)")
    _, label = sample_case
    volumeNode = slicer.util.loadVolume(str(_sample_paths()[0]))
    session = MECCASegmentLogic(device="cpu").startSession(
        volumeNode, None, roiNode=_roi_around(volumeNode, *label_box(label > 0)))
    masks = _simulated_rounds(session, label > 0, rounds=5)
    scores = [dice(mask, label) for mask in masks]
    print("Dice per round through Slicer:", [round(s, 3) for s in scores])
    assert scores[-1] >= 0.55 and scores[-1] > scores[0], scores


def test_undo_and_redo_restore_each_round(scan, logic):
    volumeNode, label = scan
    session = logic.startSession(volumeNode, None)
    masks = _simulated_rounds(session, label, rounds=2)
    assert session.canUndo and not session.canRedo
    stats = session.undo()
    assert stats["round"] == 1 and np.array_equal(_segment(session), masks[0])
    assert session.clickNodes[True].GetNumberOfControlPoints() + session.clickNodes[False].GetNumberOfControlPoints() \
        == CLICKS_PER_ROUND  # the undone round's click points are gone
    session.undo()
    assert not _segment(session).any() and not session.canUndo
    session.redo()
    session.redo()
    assert np.array_equal(_segment(session), masks[1]) and not session.canRedo
    from mecca.errors import SessionError

    with pytest.raises(SessionError, match="nothing to redo"):
        session.redo()


# -- the user's segment ----------------------------------------------------------------------------
def test_cancel_restores_an_existing_segment_bit_for_bit(scan, logic, label_values):
    """An existing segment (sharing a labelmap layer, label value 2) is the starting mask; after
    rounds that grow and shrink it, Cancel gives back every segment exactly; no user node is
    deleted or renamed, and the session's helper nodes are gone."""
    volumeNode, label = scan
    segmentationNode = _shared_layer_segmentation(volumeNode, label_values)
    before = _all_segments(segmentationNode, volumeNode)
    nodesBefore = {node.GetID(): node.GetName() for node in slicer.util.getNodesByClass("vtkMRMLNode")}
    posterior = segmentationNode.GetSegmentation().GetNthSegmentID(1)
    session = logic.startSession(volumeNode, segmentationNode, posterior)
    assert np.array_equal(_segment(session), before[posterior] > 0)  # the starting mask is the segment
    session.addClick(ijkToWorld(volumeNode, (17, 27, 16)), positive=True)
    session.addClick(ijkToWorld(volumeNode, np.argwhere(before[posterior])[0][::-1]), positive=False)
    session.refine()
    _simulated_rounds(session, label, rounds=2)
    assert not np.array_equal(_segment(session), before[posterior] > 0)
    session.cancel()
    after = _all_segments(segmentationNode, volumeNode)
    assert after.keys() == before.keys()
    for segmentId in before:
        assert np.array_equal(after[segmentId], before[segmentId])
    nodesAfter = {node.GetID(): node.GetName() for node in slicer.util.getNodesByClass("vtkMRMLNode")}
    assert nodesAfter == nodesBefore


def test_cancel_removes_what_the_session_created(scan, logic):
    volumeNode, label = scan
    session = logic.startSession(volumeNode, None)
    segmentationNode = session.segmentationNode
    _simulated_rounds(session, label, rounds=1)
    session.cancel()
    assert slicer.mrmlScene.GetNodeByID(segmentationNode.GetID()) is None
    userSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    session = logic.startSession(volumeNode, userSegmentation)
    _simulated_rounds(session, label, rounds=1)
    session.cancel()
    assert userSegmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert slicer.mrmlScene.GetNodeByID(userSegmentation.GetID()) is userSegmentation


def test_accept_keeps_the_result_as_one_segment_editor_undo_step(scan, logic, label_values):
    """Accept leaves the result and exactly one undo state in the Segment Editor's history (here the
    same vtkSlicerSegmentEditorLogic the Segment Editor widget uses): Undo gives back the segment as
    it was before the session, Redo the accepted result."""
    volumeNode, label = scan
    segmentationNode = _shared_layer_segmentation(volumeNode, label_values)
    before = _all_segments(segmentationNode, volumeNode)
    editorLogic = slicer.vtkSlicerSegmentEditorLogic()
    editorLogic.SetMRMLScene(slicer.mrmlScene)
    editorLogic.SetSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    savedStates = []

    def saveUndoState(node):
        editorLogic.SetSegmentationNode(node)
        savedStates.append(editorLogic.SaveStateForUndo())
        return True

    logic.saveUndoState = saveUndoState
    anterior = segmentationNode.GetSegmentation().GetNthSegmentID(0)
    session = logic.startSession(volumeNode, segmentationNode, anterior)
    _simulated_rounds(session, label, rounds=2)
    result = _all_segments(segmentationNode, volumeNode)
    session.accept()
    assert savedStates == [True]
    accepted = _all_segments(segmentationNode, volumeNode)
    assert all(np.array_equal(accepted[s], result[s]) for s in result)
    assert not np.array_equal(accepted[anterior], before[anterior])
    editorLogic.Undo()
    undone = _all_segments(segmentationNode, volumeNode)
    assert all(np.array_equal(undone[s], before[s]) for s in before)
    editorLogic.Redo()
    redone = _all_segments(segmentationNode, volumeNode)
    assert all(np.array_equal(redone[s], result[s]) for s in result)
    assert [case.clicks[0]["round"] for case in logic.interactiveCases()] == [1]  # clicks kept for fine-tuning
    assert session.closed
    from mecca.errors import SessionError

    with pytest.raises(SessionError, match="ended"):
        session.refine()


# -- confidence and advice -------------------------------------------------------------------------
def test_confidence_node_is_on_the_volume_grid(scan, logic):
    volumeNode, label = scan
    session = logic.startSession(volumeNode, None)
    _simulated_rounds(session, label, rounds=1)
    node = session.confidenceVolumeNode
    assert node.IsA("vtkMRMLScalarVolumeNode")
    assert np.allclose(ijkToRasMatrix(node), ijkToRasMatrix(volumeNode))
    assert node.GetImageData().GetDimensions() == volumeNode.GetImageData().GetDimensions()
    assert node.GetTransformNodeID() == volumeNode.GetTransformNodeID()
    values = slicer.util.arrayFromVolume(node)
    assert np.array_equal(values, session._engine.confidence_map()) and values.min() >= 0 and values.max() <= 1
    table = node.GetDisplayNode().GetColorNode()  # the overlay's colours are the module's doubt ramp
    assert table.GetNumberOfColors() == len(colours.doubt_ramp())
    assert np.allclose(table.GetLookupTable().GetTableValue(0)[:3], colours.DOUBTFUL, atol=1 / 255)
    session.setConfidenceVisible(True, 0.3)
    composite = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == node.GetID() and abs(composite.GetForegroundOpacity() - 0.3) < 1e-6
    session.cancel()
    assert composite.GetForegroundVolumeID() is None  # the views get their previous foreground back
    assert slicer.mrmlScene.GetNodeByID(table.GetID()) is None  # the session's helper nodes go with it


def test_advice_regions_lie_inside_the_roi_and_are_shown_numbered(scan, logic):
    from mecca.geometry import label_box

    volumeNode, label = scan
    lo, hi = label_box(label)
    session = logic.startSession(volumeNode, None, roiNode=_roi_around(volumeNode, lo, hi))
    assert session.adviceRegions == []
    _simulated_rounds(session, label, rounds=1)
    regions = session.adviceRegions
    assert [region.rank for region in regions] == [1, 2, 3, 4, 5]
    confidences = [region.meanConfidence for region in regions]
    assert confidences == sorted(confidences)
    for region in regions:
        assert all(low <= v < high for v, low, high in zip(region.centreIjk, lo, hi))
        assert np.allclose(worldToIjk(volumeNode, region.centreRas), region.centreIjk, atol=1e-6)
        assert region.voxelCount > 0
        assert region.volumeMl == pytest.approx(region.voxelCount * np.prod(volumeNode.GetSpacing()) / 1000)
        assert 0 < region.doubtfulMl <= region.volumeMl * (1 - region.meanConfidence) + 1e-9
        assert region.where.split()[::2] == [axis[int(value < 0)] for axis, value in zip(("RL", "AP", "SI"),
                                                                                         region.centreRas)]
    session.setAdviceVisible(True)
    outlines, labels = session._adviceNodes
    assert outlines.GetSegmentation().GetNumberOfSegments() == 5
    assert [labels.GetNthControlPointLabel(n) for n in range(labels.GetNumberOfControlPoints())] == \
        ["1", "2", "3", "4", "5"]
    rank1 = slicer.util.arrayFromSegmentBinaryLabelmap(outlines, "advice1", volumeNode)
    assert np.array_equal(rank1 > 0, session._engine.advice_map() == 1)


# -- clicks placed in the views --------------------------------------------------------------------
def test_points_placed_with_the_click_tools_become_clicks(scan, logic):
    from mecca.geometry import label_box

    volumeNode, label = scan
    lo, hi = label_box(label, margin=2)  # a box that ends inside the image (the sample is a tight crop)
    session = logic.startSession(volumeNode, None, roiNode=_roi_around(volumeNode, lo, hi))
    added, rejected = [], []
    session.onClickAdded = lambda: added.append(session.pendingClickCount)
    session.onClickRejected = rejected.append
    session.startPlacingClicks(False)
    interactionNode = slicer.app.applicationLogic().GetInteractionNode()
    selectionNode = slicer.app.applicationLogic().GetSelectionNode()
    assert interactionNode.GetCurrentInteractionMode() == interactionNode.Place
    assert selectionNode.GetActivePlaceNodeID() == session.clickNodes[False].GetID()
    negative = session.clickNodes[False]
    negative.AddControlPointWorld(vtk.vtkVector3d(*ijkToWorld(volumeNode, np.add(lo, 2))))  # as a click in a view does
    assert added == [1] and negative.GetNthControlPointLocked(0)
    size = volumeNode.GetImageData().GetDimensions()
    axis = next(a for a in range(3) if hi[a] < size[a] or lo[a] > 0)  # an axis where the ROI ends inside the image
    outside = np.add(lo, 2)
    outside[axis] = hi[axis] if hi[axis] < size[axis] else lo[axis] - 1
    negative.AddControlPointWorld(vtk.vtkVector3d(*ijkToWorld(volumeNode, outside)))  # in the image, not the ROI
    assert len(rejected) == 1 and "outside the ROI" in rejected[0]
    assert negative.GetNumberOfControlPoints() == 1 and session.pendingClickCount == 1
    session.stopPlacingClicks()
    assert interactionNode.GetCurrentInteractionMode() == interactionNode.ViewTransform
    assert session.refine()["clicks"] == 1


def test_bad_input_gives_clear_errors(scene, logic):
    from mecca.errors import InputError, SessionError

    with pytest.raises(InputError, match="select an input volume"):
        logic.startSession(None, None)
    volumeNode = slicer.util.loadVolume(str(_sample_paths()[0]))
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError, match="no segment with ID 'nope'"):
        logic.startSession(volumeNode, segmentationNode, "nope")
    session = logic.startSession(volumeNode, segmentationNode)
    with pytest.raises(SessionError, match="no ROI yet"):
        session.refine()
    with pytest.raises(InputError, match="outside the image"):
        session.addClick((500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="three finite numbers"):
        session.addClick((np.nan, 0.0, 0.0))
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()
    session.cancel()
    assert segmentationNode.GetSegmentation().GetNumberOfSegments() == 0
    with pytest.raises(Exception, match="model file not found"):
        MECCASegmentLogic(modelPath="/no/such/model.safetensors").startSession(volumeNode, segmentationNode)
    assert segmentationNode.GetSegmentation().GetNumberOfSegments() == 0  # nothing left behind


# -- fine-tuning -----------------------------------------------------------------------------------
def test_export_to_msd_and_the_fine_tuning_command(scene, logic, sample_case, tmp_path):
    """Scene volume + segment pairs become an MSD folder the engine reads back unchanged; accepted
    sessions become unlabelled cases with their clicks; the train command starts from the current model."""
    from mecca.cli import build_parser
    from mecca.clicks import read_clicks
    from mecca.datasets import MSDDataset
    from mecca.io import read_volume

    pairs = []
    image, label = sample_case
    for flipped in (False, True):  # the sample, and a mirrored copy as a second scan
        if flipped:
            volumeNode = slicer.util.addVolumeFromArray(image.array[:, :, ::-1].copy(), ijkToRAS=_oblique_matrix(),
                                                        name="mirrored")
        else:
            volumeNode = slicer.util.loadVolume(str(_sample_paths()[0]))
        values = label[:, :, ::-1].copy() if flipped else label
        _shared_layer_segmentation(volumeNode, values)
        pairs.append((volumeNode, values))
    cases = logic.labelledCases()
    assert len(cases) == 4  # two segments per volume
    session = logic.startSession(pairs[0][0], None)
    _simulated_rounds(session, pairs[0][1] > 0, rounds=2)
    session.accept()
    interactive = logic.interactiveCases()
    assert len(interactive) == 1 and len(interactive[0].clicks) == 2 * CLICKS_PER_ROUND

    heldOut = cases[3]
    data = finetuning.exportCases(tmp_path / "data", cases, interactive, [heldOut])
    labelled = MSDDataset.open(data.labelledDir)
    assert len(labelled.cases) == 3 and len(MSDDataset.open(data.heldOutDir).cases) == 1
    original = read_volume(_sample_paths()[0])
    image, exportedLabel = labelled.cases[0].load()
    assert np.array_equal(image.array, original.array)
    assert np.allclose(image.spacing, original.spacing) and np.allclose(image.origin, original.origin)
    assert np.allclose(image.direction, original.direction)
    assert np.array_equal(exportedLabel, _all_segments(cases[0].segmentationNode, cases[0].volumeNode)[cases[0].segmentId])

    manifest = json.loads((data.interactiveDir / "dataset.json").read_text())
    entry = manifest["training"][0]
    assert set(entry) == {"image", "clicks"}
    rounds, _ = read_clicks(data.interactiveDir / entry["clicks"], read_volume(data.interactiveDir / entry["image"]))
    replayed = [(tuple(int(v) for v in np.rint(ijk)), positive) for r in sorted(rounds) for ijk, positive in rounds[r]]
    assert replayed == [(tuple(c["ijk"]), c["positive"]) for c in interactive[0].clicks]

    extra = tmp_path / "more"
    command = finetuning.trainCommand(logic.modelFile, data, tmp_path / "new.safetensors", 3, "cpu", [extra])
    assert command[:3] == [finetuning.pythonExecutable(), "-m", "mecca.cli"]
    assert command[3:] == ["train", "--dataset", str(data.labelledDir), "--dataset", str(extra),
                           "--unlabeled", str(data.interactiveDir), "--init", str(logic.modelFile),
                           "--out", str(tmp_path / "new.safetensors"), "--epochs", "3", "--device", "cpu",
                           "--validation-fraction", "0", "--progress", "jsonl"]
    arguments = build_parser().parse_args(command[3:])
    assert arguments.init == str(logic.modelFile) and arguments.progress == "jsonl"
    automatic = finetuning.trainCommand(logic.modelFile, data, tmp_path / "new.safetensors", 0, "cpu")
    assert "--epochs" not in automatic and build_parser().parse_args(automatic[3:]).epochs is None
    evaluate = finetuning.evaluateCommand(data.heldOutDir, "m.safetensors", "out.json")[3:]
    assert evaluate == ["evaluate", "--dataset", str(data.heldOutDir), "--model", "m.safetensors", "--split", "all",
                        "--user", "interior", "--json", "out.json"]
    arguments = build_parser().parse_args(evaluate)
    assert arguments.split == "all" and arguments.user == "interior"  # every held-back case, clicked as a person does


def test_the_panel_reads_the_engines_progress_stream(logic, tmp_path):
    """A step event of the trainer (mecca.progress, the one schema) moves the bar and shows the time
    left and the peak memory; durations read as people write them."""
    from mecca.progress import STEP_FIELDS, event_line

    data = finetuning.TrainingData(tmp_path, tmp_path / "labelled", None, None)
    run = finetuning.FineTuningRun(logic.modelFile, data, tmp_path / "new.safetensors", 4, "cpu")
    fields = {field: 0 for field in STEP_FIELDS} | {"epoch": 2, "epochs": 4, "step": 5, "steps": 10, "eta_s": 75.5,
                                                    "peak_memory_mb": 2150.0}
    run.onEvent(progress.parse_line(event_line("step", **fields)))
    assert run.trainingFraction == pytest.approx(15 / 40)
    run.status, run.stepIndex = "running", 0  # as while the training process runs
    assert run.statusText == "fine-tuning, about 1 min 16 s left, peak memory 2.1 GB"
    assert finetuning.formatDuration(75.5) == "1 min 16 s" and finetuning.formatDuration(7260) == "2 h 01 min"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _poll_until_done(job, timeout=30.0) -> list[dict]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += job.poll()
        if not job.running and any(e["event"] in ("finished", "failed", "cancelled") for e in events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"background job did not end: {events}")


def test_fine_tuning_run_reports_progress_and_results_without_blocking(scene, logic, tmp_path):
    """The run's steps (evaluate current model, train --init, evaluate new model) go one after another
    in background processes; poll() hands over progress, the new model and the comparison. The
    commands here are stand-ins printing what ``mecca`` prints, so no training runs."""
    data = finetuning.TrainingData(tmp_path, tmp_path / "labelled", None, tmp_path / "heldout")
    run = finetuning.FineTuningRun(logic.modelFile, data, tmp_path.parent / "new.safetensors", 2, "cpu")
    assert [step.name for step in run.steps] == ["evaluating the current model on the held-back cases", "fine-tuning",
                                                 "evaluating the new model on the held-back cases"]
    assert run.steps[0].command[run.steps[0].command.index("--model") + 1] == str(logic.modelFile)
    assert run.steps[1].command[run.steps[1].command.index("--init") + 1] == str(logic.modelFile)
    assert run.steps[2].command[run.steps[2].command.index("--model") + 1] == str(run.newModelPath)
    evaluation = 'import json,sys; json.dump({"methods": {"mecca": {"dice_mean_per_round": %s}}}, open(sys.argv[1], "w"))'
    train = ("import json\nfor step in (1, 2):\n print(json.dumps({'event': 'step', 'epoch': 1, 'epochs': 1, "
             "'step': step, 'steps': 2, 'eta_s': 3 - step}), flush=True)\nprint('a warning')\n"
             f"print(json.dumps({{'event': 'done', 'model': {str(tmp_path / 'made.safetensors')!r}}}))")
    run.steps[0].command = _python(evaluation % "[0.5, 0.6]") + [str(run.beforeJson)]
    run.steps[1].command = _python(train)
    run.steps[2].command = _python(evaluation % "[0.7, 0.8]") + [str(run.afterJson)]
    run.start()
    assert run.running
    events = _poll_until_done(run)
    kinds = [e["event"] for e in events]
    assert kinds == ["stepStarted", "stepStarted", "step", "step", "log", "done", "stepStarted", "finished"]
    assert run.status == "finished" and run.fraction == 1.0
    assert run.newModelPath == tmp_path / "made.safetensors"
    assert run.comparison() == {"before": [0.5, 0.6], "after": [0.7, 0.8]}
    assert "0.500 0.600" in run.comparisonText() and "0.700 0.800" in run.comparisonText()
    assert run.newModelIsBetter and "use it for the next sessions" in run.comparisonText()
    # a new model that does worse on the held-back case is not offered, and the text says so
    run.afterJson.write_text(json.dumps({"methods": {"mecca": {"dice_mean_per_round": [0.4, 0.65]}}}))
    assert not run.newModelIsBetter and "current model stays in use" in run.comparisonText()


def test_fine_tuning_always_holds_a_case_back_to_check_the_new_model(scene, logic, tmp_path, monkeypatch):
    """Without chosen held-back cases, one in four of the labelled cases (the last ones, at least one)
    is held back; with a single labelled case fine-tuning is refused, since the new model could not
    be checked."""
    from mecca.errors import InputError

    exported = {}
    monkeypatch.setattr(module, "exportCases", lambda folder, labelled, interactive, heldOut: exported.update(
        labelled=list(labelled), heldOut=list(heldOut)) or finetuning.TrainingData(Path(folder), None, None, None))
    monkeypatch.setattr(finetuning.FineTuningRun, "start", lambda run: None)  # no process: only the plan is checked
    logic.startFineTuning(tmp_path, ["case a", "case b", "case c"], epochs=1)
    assert exported == {"labelled": ["case a", "case b", "case c"], "heldOut": ["case c"]}
    eight = [f"case {n}" for n in range(8)]
    logic.startFineTuning(tmp_path, eight, epochs=1)
    assert exported["heldOut"] == ["case 6", "case 7"]
    with pytest.raises(InputError, match="hold back"):
        logic.startFineTuning(tmp_path, ["case a"], epochs=1)


def test_background_job_failure_and_cancel():
    failing = finetuning.BackgroundJob([finetuning.JobStep("bad", _python("import sys; print('oops'); sys.exit(3)")),
                                    finetuning.JobStep("never", _python("print('no')"))])
    failing.start()
    events = _poll_until_done(failing)
    assert failing.status == "failed" and events[-1]["event"] == "failed" and "exit code 3" in events[-1]["message"]
    assert {"event": "log", "message": "oops", "step": "bad"} in events and failing.stepIndex == 0
    slow = finetuning.BackgroundJob([finetuning.JobStep("slow", _python("import time; time.sleep(60)"))])
    slow.start()
    slow.cancel()
    events = _poll_until_done(slow)
    assert slow.status == "cancelled" and events[-1]["event"] == "cancelled"


# -- the module's own Slicer self-test -------------------------------------------------------------
def test_module_self_test_runs_on_the_core(scene, model_file):
    """MECCASegmentTest (what Slicer's self-test runs) passes on the headless core."""
    test = module.MECCASegmentTest()
    test.modelPath = model_file
    test.runTest()


def test_a_random_walker_start_and_the_not_following_warning(scene, sample_case, logic):
    """'First round from: random-walker' reaches the engine's session; a round whose segment leaves
    half the clicks on the wrong side says so (lostOnThisStructure) and names both remedies."""
    from mecca.errors import InputError

    volumeNode, label = slicer.util.loadVolume(str(_sample_paths()[0])), sample_case[1] > 0
    session = logic.startSession(volumeNode, startEstimate="random-walker")
    assert session._engine.start_estimate == "random-walker"
    centre = np.argwhere(label).mean(0).round().astype(int)
    session.addClick(ijkToWorld(volumeNode, centre[::-1]), True)
    stats = session.refine()
    assert stats["clicksInEffect"] == 1 and stats["clicksNotFollowed"] == int(not _segment(session)[tuple(centre)])
    assert "start_estimate_s" in session._engine.history[0]["timings"]
    session.cancel()
    assert not editing.lostOnThisStructure({"clicksNotFollowed": 1, "clicksInEffect": 1})
    assert editing.lostOnThisStructure({"clicksNotFollowed": 2, "clicksInEffect": 4})
    assert not editing.lostOnThisStructure({"clicksNotFollowed": 2, "clicksInEffect": 5})
    with pytest.raises(InputError, match="first round starts from"):
        logic.startSession(volumeNode, startEstimate="grow")
