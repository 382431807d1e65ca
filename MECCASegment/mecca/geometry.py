"""Axis order, in one place.

ITK and Slicer index a voxel (i, j, k); the numpy arrays of their images are indexed (k, j, i).
Inside the engine every position and box is in numpy order; the two functions below are the only
places that turn one order into the other, at the engine's boundary (ITK/Slicer indices in, the
same out).
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


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    """The numpy slices of a box."""
    return tuple(slice(lo, hi) for lo, hi in zip(*box))


def box_shape(box: Box) -> Index:
    return tuple(int(hi - lo) for lo, hi in zip(*box))
