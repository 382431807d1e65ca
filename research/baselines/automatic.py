"""Fully automatic baselines, the paper's P-Net and U-Net rows: the image alone in, the foreground
out, the clicks ignored. They show what the clicks add: an interactive method that does not beat
them after five rounds is not worth a clinician's clicks.

Both see what the interactive methods see (the ROI, the object's box plus the margin, on the same
working grid) and train on the same crops (mecca.episodes.make_batch), supervised with the
class-weighted cross-entropy of the interactive baselines (supervised.train_supervised).

- ``p-net``: MECCA's policy backbone (the paper's P-Net, as InterCNN's) on the image channel alone;
- ``u-net``: a 3D U-Net of three levels (Çiçek et al., 2016), widths w, 2w, 4w.

    python -m research.baselines.automatic --architecture p-net --dataset DIR [--dataset DIR2] --out p-net.safetensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mecca.clicks import Click
from mecca.environment import normalize_image
from mecca.episodes import EpisodeBatch, batch_dice, class_weights, masked_mean
from mecca.errors import CheckpointError, InputError
from mecca.harness import InteractiveMethod, register_method
from mecca.networks import NetworkConfig
from mecca.recipe import TrainingConfig
from mecca.volume import Volume
from mecca.working_grid import working_grid
from torch import nn

from .intercnn import InterCNN
from .supervised import in_memory, load_weights, read_baseline, save_baseline, train_supervised, training_parser, training_recipe

KIND = "automatic"
ARCHITECTURES = ("p-net", "u-net")


def _double_convolution(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, 3, padding=1), nn.InstanceNorm3d(out_channels, affine=True),
                         nn.LeakyReLU(0.01, inplace=True), nn.Conv3d(out_channels, out_channels, 3, padding=1),
                         nn.InstanceNorm3d(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True))


class UNet(nn.Module):
    """Three levels of two 3x3x3 convolutions (instance norm, leaky ReLU), max-pooling down,
    trilinear upsampling and skip connections up; one foreground logit per voxel."""

    def __init__(self, width: int):
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.down = nn.ModuleList([_double_convolution(1, widths[0]), _double_convolution(widths[0], widths[1]),
                                   _double_convolution(widths[1], widths[2])])
        self.up = nn.ModuleList([_double_convolution(widths[2] + widths[1], widths[1]),
                                 _double_convolution(widths[1] + widths[0], widths[0])])
        self.out = nn.Conv3d(widths[0], 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = image.shape[2:]
        x = F.pad(image, [p for s in reversed(size) for p in (0, -s % 4)])  # two poolings need multiples of 4
        skips = []
        for level, block in enumerate(self.down):
            x = block(F.max_pool3d(x, 2) if level else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False), skip], 1))
        return self.out(x)[:, 0, :size[0], :size[1], :size[2]]


def build(architecture: str, config: NetworkConfig) -> nn.Module:
    """An untrained automatic network; both map (B, 1, D, H, W) images to (B, D, H, W) logits."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    return InterCNN(config, in_channels=1) if architecture == "p-net" else UNet(config.width)


def save_automatic(net: nn.Module, architecture: str, config: NetworkConfig, path, metadata: dict | None = None) -> Path:
    return save_baseline(net, KIND, config, path, metadata, architecture=architecture)


def load_automatic(path) -> tuple[nn.Module, str, NetworkConfig, dict]:
    """An automatic model file -> (network in eval mode, its architecture, its backbone config, its metadata)."""
    weights, config, details, metadata = read_baseline(path, KIND)
    architecture = details.get("architecture")
    try:
        net = build(architecture, config)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    return load_weights(net, weights, path), architecture, config, metadata


class AutomaticMethod(InteractiveMethod):
    """A fully automatic network under the harness: every round the same prediction on the ROI,
    computed again so the harness times what a round of this method costs."""

    def __init__(self, model_path, architecture: str | None = None):
        """``architecture``, when given, is the one the file must hold; CheckpointError otherwise."""
        self.net, self.architecture, self.config, _ = load_automatic(model_path)
        if architecture is not None and self.architecture != architecture:
            raise CheckpointError(f"{model_path}: an automatic {self.architecture}, not a {architecture}")

    @property
    def name(self) -> str:
        return self.architecture

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        image_norm = normalize_image(image.array[self.region])
        self.grid = working_grid(image_norm.shape, image.spacing_kji, min_voxels=self.config.min_working_voxels)
        self.working = self.grid.to_working(torch.from_numpy(image_norm)[None])[None]

    @torch.no_grad()
    def refine(self, clicks: list[Click]) -> np.ndarray:
        return self.grid.to_native(torch.sigmoid(self.net(self.working).float()))[0].numpy()


for _architecture in ARCHITECTURES:
    register_method(_architecture, lambda model_path, a=_architecture: AutomaticMethod(model_path, a))


def automatic_step_loss(net: nn.Module, batch: EpisodeBatch, rng: np.random.Generator | None,
                        balance: float, progress: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Class-weighted cross-entropy of one prediction per crop (``rng`` and ``progress`` unused: no
    clicks, no schedule)."""
    return supervised_loss(net(batch.image[:, None].contiguous(memory_format=torch.channels_last_3d)), batch, balance)


def supervised_loss(logit: torch.Tensor, batch: EpisodeBatch, balance: float) -> tuple[torch.Tensor, dict]:
    """The class-weighted cross-entropy of ``logit`` against the batch's label, and its Dice."""
    label, valid = batch.label.bool(), batch.valid.float()
    loss = masked_mean(F.binary_cross_entropy_with_logits(logit, label.float(), reduction="none"),
                       class_weights(valid, label.float(), balance))
    return loss, {"loss": loss.item(), "dice": batch_dice((logit.detach() > 0) & (valid > 0), label & (valid > 0))}


def train(architecture: str, dataset_dirs: list[str], out, recipe: TrainingConfig,
          network: NetworkConfig | None = None) -> Path:
    """Train an automatic network (supervised.train_supervised: ``recipe``'s epochs, rate, seed and
    crops), validated on one round (all are the same)."""
    network = network or NetworkConfig()
    return train_supervised(lambda: build(architecture, network), automatic_step_loss,
                            lambda net, path, meta: save_automatic(net, architecture, network, path, meta),
                            lambda net: in_memory(AutomaticMethod, net=net, architecture=architecture, config=network),
                            dataset_dirs, out, recipe, network.min_working_voxels, validation_rounds=1)


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m research.baselines.automatic", __doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=ARCHITECTURES, required=True)
    args = parser.parse_args(argv)
    try:
        recipe = training_recipe(args)
    except InputError as error:
        parser.error(str(error))
    print(f"wrote {train(args.architecture, args.dataset, args.out, recipe)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
