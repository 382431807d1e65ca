"""Make a thick-slice copy of an MSD dataset's validation cases (docs/results.md, "Thick slices").

    python docs/results/make_thick_slices.py ../shared/data/LeftAtrium2018 /tmp/la-5mm 4

Each validation case (the split `mecca train` holds out) is resampled to FACTOR times thicker k
slices, as a thick-slice acquisition of the same anatomy would give it: the image linearly, the
label as the majority of each slab. The copy is an ordinary MSD folder for `mecca evaluate --split all`.
"""

import json
import sys
from pathlib import Path

import SimpleITK as sitk
from MECCASegmentLib.io import MSDDataset, split_validation


def thicker(image: sitk.Image, factor: float) -> sitk.Image:
    image = sitk.Cast(image, sitk.sitkFloat32)
    size, spacing = list(image.GetSize()), list(image.GetSpacing())
    new_size = size[:2] + [max(1, round(size[2] / factor))]
    new_spacing = spacing[:2] + [spacing[2] * factor]
    return sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), new_spacing,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def main(source: str, target: str, factor: float) -> None:
    out = Path(target)
    dataset = MSDDataset.open(source)
    held_out = split_validation([c.name for c in dataset.cases], 0.2)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    entries = []
    for case in (c for c in dataset.cases if c.name in held_out):
        sitk.WriteImage(thicker(sitk.ReadImage(str(case.image)), factor), str(out / "imagesTr" / case.image.name))
        label = sitk.Cast(thicker(sitk.ReadImage(str(case.label)) > 0, factor) > 0.5, sitk.sitkUInt8)
        sitk.WriteImage(label, str(out / "labelsTr" / case.label.name))
        entries.append({"image": f"./imagesTr/{case.image.name}", "label": f"./labelsTr/{case.label.name}"})
    manifest = json.loads((Path(source) / "dataset.json").read_text())
    manifest.update(name=f"{manifest['name']}-slices-x{factor:g}", training=entries, numTraining=len(entries))
    (out / "dataset.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(entries)} cases with {factor:g}x thicker slices in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
