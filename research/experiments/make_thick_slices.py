"""Make a thick-slice copy of an MSD dataset's validation cases (research/NOTEBOOK.md, "Thick slices").

    python -m research.experiments.make_thick_slices ../shared/data/LeftAtrium2018 /tmp/la-5mm 4

Each validation case (the split `mecca train` holds out) is resampled to FACTOR times thicker k
slices, as a thick-slice acquisition of the same anatomy would give it: the image linearly, the
label as the majority of each slab. The copy is an ordinary MSD folder for `mecca evaluate --split all`.
"""

import json
import sys
from pathlib import Path

import numpy as np
from mecca.datasets import MSDDataset
from mecca.io import read_volume, write_volume
from mecca.volume import Volume, resample_to_shape


def thicker(volume: Volume, factor: float) -> Volume:
    """The same physical box with FACTOR times fewer (thicker) k slices, linearly interpolated."""
    k, j, i = volume.shape
    return resample_to_shape(volume.with_array(volume.array.astype(np.float32)), (max(1, round(k / factor)), j, i))


def main(source: str, target: str, factor: float) -> None:
    out = Path(target)
    dataset = MSDDataset.open(source)
    entries = []
    for case in dataset.validation_cases(0.2):
        image, label = read_volume(case.image), read_volume(case.label)
        write_volume(thicker(image, factor), out / "imagesTr" / case.image.name)
        slabs = thicker(label.with_array(label.array > 0), factor)
        write_volume(slabs.with_array((slabs.array > 0.5).astype(np.uint8)), out / "labelsTr" / case.label.name)
        entries.append({"image": f"./imagesTr/{case.image.name}", "label": f"./labelsTr/{case.label.name}"})
    manifest = json.loads((Path(source) / "dataset.json").read_text())
    manifest.update(name=f"{manifest['name']}-slices-x{factor:g}", training=entries, numTraining=len(entries))
    (out / "dataset.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(entries)} cases with {factor:g}x thicker slices in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
