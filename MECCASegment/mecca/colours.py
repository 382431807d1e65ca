"""The colour language of every picture MECCA draws: the montage of `mecca demo` and `mecca segment`,
the evaluation figure, and the Slicer module's clicks, overlay and advice regions
(docs/slicer.md, "Colours"). One colour, one meaning; each as (red, green, blue) in 0-1, the form
Slicer's display nodes take, and as the hex code matplotlib takes.

No import beyond the standard library: the Slicer module reads these without loading matplotlib.
"""

from __future__ import annotations

SEGMENT = (1.0, 0.83, 0.0)  # MECCA's segment (its outline): yellow
REFERENCE = (0.0, 0.9, 1.0)  # the expert label a Dice is scored against: cyan, drawn dashed
POSITIVE_CLICK = (0.2, 0.85, 0.2)  # "+": grow the segment here: green
NEGATIVE_CLICK = (0.95, 0.2, 0.2)  # "-": shrink it here: red
ADVICE = (1.0, 1.0, 1.0)  # the five "click here next" regions, told apart by their rank number: white
DOUBTFUL = (0.48, 0.0, 0.78)  # the confidence overlay at confidence 0: purple ...
HESITANT = (0.93, 0.8, 1.0)  # ... fading to pale lilac as the confidence nears CONFIDENT, where it ends
CONFIDENT = 0.999  # the overlay leaves voxels at or above this confidence transparent: nothing to see there


def hex_code(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb)


def doubt_ramp(steps: int = 256) -> list[tuple[float, float, float]]:
    """The confidence overlay's colours from confidence 0 (DOUBTFUL) to CONFIDENT (HESITANT), evenly
    spaced: the Slicer module's colour table and the montage's colour map are this one list."""
    return [tuple(a + (b - a) * n / (steps - 1) for a, b in zip(DOUBTFUL, HESITANT)) for n in range(steps)]
