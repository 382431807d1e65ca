"""The classical seeded tools clinicians use today, under the harness: Slicer's Grow from seeds and
scikit-image's random walker. Both get the clicks as Slicer users paint seeds: balls of 2 voxels
and a background shell on the ROI's border (mecca.seeded)."""

from __future__ import annotations

import numpy as np
from mecca.clicks import Click
from mecca.environment import normalize_image
from mecca.geometry import box_shape
from mecca.harness import InteractiveMethod, evaluate, register_method
from mecca.seeded import RANDOM_WALKER_BETA, random_walker_probability, seed_map
from mecca.volume import Volume

RANDOM_WALKER_BETAS = (30.0, 130.0, 300.0, 1000.0, 3000.0)  # tried on training cases (tune_random_walker_beta)


class SeedMethod(InteractiveMethod):
    """A seed-based tool: clicks become seed balls and the ROI's border a background shell."""

    def seeds(self, clicks: list[Click]) -> np.ndarray:
        return seed_map(box_shape(self.box), clicks, self.box[0])


class GrowFromSeedsMethod(SeedMethod):
    """Slicer's Grow from seeds (vtkImageGrowCutSegment from the slicer-core wheel)."""

    name = "grow-from-seeds"

    def __init__(self):
        try:
            import slicer  # noqa: F401  (the slicer-core wheel)
        except ImportError as error:
            raise RuntimeError("grow-from-seeds needs the slicer-core package: pip install slicer-core") from error

    def refine(self, clicks: list[Click]) -> np.ndarray:
        import slicer
        import vtk
        from vtk.util import numpy_support

        def image_data(array: np.ndarray, vtk_type: int):
            data = vtk.vtkImageData()
            data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
            data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True,
                                                                      array_type=vtk_type))
            return data

        seeds = self.seeds(clicks)
        grow = slicer.vtkImageGrowCutSegment()
        grow.SetIntensityVolume(image_data(self.image.array[self.region].astype(np.float32), vtk.VTK_FLOAT))
        grow.SetSeedLabelVolume(image_data(seeds, vtk.VTK_SHORT))
        grow.SetDistancePenalty(0.0)  # Slicer's default seed locality
        grow.Update()
        labels = numpy_support.vtk_to_numpy(grow.GetOutput().GetPointData().GetScalars()).reshape(seeds.shape)
        return (labels == 1).astype(np.float32)


class RandomWalkerMethod(SeedMethod):
    """scikit-image's random walker (Grady 2006) on the normalised ROI, same seeds."""

    name = "random-walker"

    def __init__(self, beta: float = RANDOM_WALKER_BETA):
        self.beta = beta

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        self.image_norm = normalize_image(image.array[self.region])

    def refine(self, clicks: list[Click]) -> np.ndarray:
        return random_walker_probability(self.image_norm, self.seeds(clicks), self.image.spacing_kji, self.beta)


def tune_random_walker_beta(cases, labels=None, rounds: int = 5, clicks_per_round: int = 3, seed: int = 0,
                            user: str = "edge", betas=RANDOM_WALKER_BETAS,
                            progress: bool = True) -> tuple[float, dict[float, float]]:
    """The random walker's beta with the best mean Dice over ``rounds`` on ``cases`` (training cases:
    never the ones it is then compared on), under the same user and clicks; returns (beta, mean Dice
    over cases and rounds for each beta tried). scikit-image's default of 130 suits an image whose
    edges are a fraction of its spread; on some scans a larger beta finds the edges much better."""
    scores = {}
    for beta in betas:
        summary, _, _ = evaluate(cases, {"random-walker": lambda b=beta: RandomWalkerMethod(b)}, labels, rounds,
                                 clicks_per_round, seed, progress, user)
        per_round = summary["random-walker"].get("dice_mean_per_round")
        scores[beta] = round(float(np.mean(per_round)), 5) if per_round else float("nan")
    best = max(scores, key=lambda b: -1.0 if np.isnan(scores[b]) else scores[b])
    return best, scores


register_method("grow-from-seeds", GrowFromSeedsMethod)
register_method("random-walker", RandomWalkerMethod)
