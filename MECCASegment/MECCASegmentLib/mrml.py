"""Between MRML nodes and the engine: a volume's geometry (IJK <-> RAS through parent transforms),
its voxels as the engine's Volume, binary labelmaps written back into a segmentation, and the
Segment Editor's undo step."""

import numpy as np
import slicer
import vtk
import vtk.util.numpy_support


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
    from mecca.volume import Volume

    matrix = ijkToRasMatrix(volumeNode)
    spacing = np.array(volumeNode.GetSpacing())
    rasToLps = np.diag([-1.0, -1.0, 1.0])
    direction = rasToLps @ matrix[:3, :3] / spacing
    return Volume(np.array(slicer.util.arrayFromVolume(volumeNode)), tuple(spacing), tuple(rasToLps @ matrix[:3, 3]),
                  tuple(direction.ravel()), volumeNode.GetName())


def maskBox(mask: np.ndarray):
    """(lo, hi) numpy-order bounding box of the True voxels, hi exclusive; None when there are none."""
    points = np.argwhere(mask)
    if points.size == 0:
        return None
    return tuple(int(v) for v in points.min(0)), tuple(int(v) for v in points.max(0) + 1)


def boxUnion(a, b):
    if a is None:
        return b
    return tuple(map(min, a[0], b[0])), tuple(map(max, a[1], b[1]))


def labelmapImage(values: np.ndarray, lo, ijkToFrame: np.ndarray):
    """A vtkOrientedImageData holding ``values`` (numpy k, j, i) at voxel ``lo`` of a grid whose
    IJK -> (segmentation frame) matrix is ``ijkToFrame``."""
    image = slicer.vtkOrientedImageData()
    (k0, j0, i0), (k1, j1, i1) = lo, np.add(lo, values.shape) - 1
    image.SetExtent(i0, i1, j0, j1, k0, k1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = values.astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToFrame))
    return image


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


