"""Axis order, boxes and the patient's sides, in one place.

ITK and Slicer index a voxel (i, j, k); the numpy arrays of their images are indexed (k, j, i).
Inside the engine every position and box is in numpy order; kji_from_ijk and ijk_from_kji are the
only places that turn one order into the other, at the engine's boundary (ITK/Slicer indices in,
the same out). Also here: an object's box (label_box) and which plane and patient sides a slice
shows (slice_orientation). The standard library only (numpy inside label_box), so importing this
stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

Index = tuple[int, int, int]
Box = tuple[Index, Index]  # (lo, hi) numpy (k, j, i) indices, hi exclusive


def kji_from_ijk(ijk: Sequence) -> Index:
    """An ITK/Slicer (i, j, k) index as a numpy (k, j, i) index."""
    return tuple(int(v) for v in reversed(tuple(ijk)))


def ijk_from_kji(kji: Sequence) -> Index:
    """A numpy (k, j, i) index as an ITK/Slicer (i, j, k) index."""
    return tuple(int(v) for v in reversed(tuple(kji)))


EVAL_ROI_MARGIN = 8  # voxels around the true object: the box a user would draw


def label_box(label, margin: int = EVAL_ROI_MARGIN) -> tuple[Index, Index]:
    """The (i, j, k) box [lo, hi) of a label's object plus a margin, clipped to the image (the ROI of
    an evaluation and of a training case). ``label``: a numpy array (numpy is imported here only)."""
    import numpy as np

    points = np.argwhere(label > 0)
    if points.size == 0:
        raise ValueError("the label is empty: there is no object to segment")
    lo = np.maximum(points.min(0) - margin, 0)
    hi = np.minimum(points.max(0) + 1 + margin, label.shape)
    return ijk_from_kji(lo), ijk_from_kji(hi)


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    """The numpy slices of a box."""
    return tuple(slice(lo, hi) for lo, hi in zip(*box))


def box_shape(box: Box) -> Index:
    return tuple(int(hi - lo) for lo, hi in zip(*box))


PATIENT_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))  # ITK's world axes (LPS): the side each one points to, and away
PLANE_OF_NORMAL = ("sagittal", "coronal", "axial")  # the plane whose normal is that world axis


def _dominant(vector: Sequence[float]) -> int:
    return max(range(3), key=lambda axis: abs(vector[axis]))


def side_of(vector: Sequence[float]) -> str:
    """The patient side (L, R, P, A, S or I) an LPS world direction points to most."""
    axis = _dominant(vector)
    return PATIENT_LETTERS[axis][0 if vector[axis] > 0 else 1]


def slice_orientation(direction: Sequence[float]) -> tuple[str, dict[str, str]]:
    """The plane of a slice k of an image with this ITK direction (row-major 3x3, columns the i, j, k
    axes in LPS), and the patient side at each edge of that slice drawn as numpy shows it (rows j
    downwards, columns i to the right): ("axial", {"top": "A", "bottom": "P", "left": "R", "right": "L"})."""
    i_axis, j_axis, k_axis = ([direction[3 * row + column] for row in range(3)] for column in range(3))
    edges = {"right": side_of(i_axis), "left": side_of([-v for v in i_axis]),
             "bottom": side_of(j_axis), "top": side_of([-v for v in j_axis])}
    return PLANE_OF_NORMAL[_dominant(k_axis)], edges
