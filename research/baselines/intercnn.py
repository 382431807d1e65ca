"""InterCNN (Bredell et al., 2018) on MECCA's backbone, as the paper's Table 1 runs it: the state
(image, previous probability, hint map of the clicks) in, the foreground logit out, trained with
cross-entropy round after round of a simulated user (each round's prediction becomes the next
round's probability channel). The paper gives every CNN the P-Net backbone and every method hint
maps of clicks (InterCNN's own users drew scribbles); so does this one.

With geodesic hint maps (``--hint-encoding geodesic``: exp(-D/2) of the geodesic distance to the
clicks on the image, hints.py) the same network is the paper's DeepIGeoS row: DeepIGeoS's
refinement network on image, previous prediction and geodesic maps, without its CRF layer. The
harness names the method by its model file's hints (``intercnn`` or ``deepigeos``).

Its model files use the engine's file format (safetensors + JSON, never pickle) with their own
kind, ``"model": "intercnn"``, which the product refuses to load as a MECCA model.

    python -m research.baselines.intercnn --dataset DIR [--dataset DIR2] --out intercnn.safetensors --epochs 8
    python -m research.baselines.intercnn ... --hint-encoding geodesic --out deepigeos.safetensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mecca.clicks import Click
from mecca.environment import build_state, normalize_image
from mecca.episodes import EpisodeBatch, batch_dice, class_weights, masked_mean
from mecca.errors import CheckpointError, InputError
from mecca.harness import InteractiveMethod, register_method
from mecca.hints import HINT_ENCODINGS, encode_hints
from mecca.networks import STATE_CHANNELS, DilatedBlock, Encoder, FusionHead, NetworkConfig
from mecca.recipe import TrainingConfig
from mecca.users import SimulatedUser
from mecca.volume import Volume
from mecca.working_grid import working_grid
from torch import nn

from .supervised import in_memory, load_weights, read_baseline, save_baseline, train_supervised, training_parser, training_recipe

KIND = "intercnn"


class InterCNN(nn.Module):
    """MECCA's policy backbone (the paper's P-Net) with one foreground logit per voxel, on the state
    (image, probability, hint) or, with ``in_channels=1``, on the image alone."""

    def __init__(self, config: NetworkConfig, in_channels: int = STATE_CHANNELS):
        super().__init__()
        c = config
        self.trunk = Encoder(in_channels, c.width, c.stride, c.trunk_dilations)
        self.blocks = nn.Sequential(*(DilatedBlock(c.width, d) for d in c.head_dilations))
        self.out = FusionHead(c.width, in_channels, 1, c.stride, c.fusion_channels, c.fusion_out_channels, False)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.trunk(state)), state).squeeze(1)


def save_intercnn(net: InterCNN, config: NetworkConfig, path, metadata: dict | None = None) -> Path:
    return save_baseline(net, KIND, config, path, metadata)


def load_intercnn(path) -> tuple[InterCNN, NetworkConfig, dict]:
    """An InterCNN model file -> (network in eval mode, its architecture, its metadata)."""
    weights, config, _, metadata = read_baseline(path, KIND)
    return load_weights(InterCNN(config), weights, path), config, metadata


class InterCNNMethod(InteractiveMethod):
    """InterCNN (or DeepIGeoS) under the harness: each round's prediction becomes the next input."""

    def __init__(self, model_path, hint_encoding: str | None = None):
        """``hint_encoding``, when given, is the hints the model must have been trained with
        (``"geodesic"`` for the DeepIGeoS row); CheckpointError otherwise."""
        self.net, self.config, _ = load_intercnn(model_path)
        if hint_encoding is not None and self.config.hint_encoding != hint_encoding:
            raise CheckpointError(f"{model_path}: an InterCNN with {self.config.hint_encoding} hint maps, "
                                  f"not {hint_encoding} ones")

    @property
    def name(self) -> str:
        return "deepigeos" if self.config.hint_encoding == "geodesic" else KIND

    def start(self, image: Volume, box) -> None:
        super().start(image, box)
        image_norm = normalize_image(image.array[self.region])
        # the grid MECCA's session uses, with this model's own minimum
        self.grid = working_grid(image_norm.shape, image.spacing_kji, min_voxels=self.config.min_working_voxels)
        self.image_norm = self.grid.to_working(torch.from_numpy(image_norm)[None])
        self.probability = torch.full_like(self.image_norm, 0.5)

    @torch.no_grad()
    def refine(self, clicks: list[Click]) -> np.ndarray:
        clicks, offset = self.grid.clicks(clicks, self.box[0])
        hint = torch.from_numpy(encode_hints(self.config.hint_encoding, self.image_norm[0].numpy(), clicks, offset))[None]
        state = build_state(self.image_norm, self.probability, hint).contiguous(memory_format=torch.channels_last_3d)
        self.probability = torch.sigmoid(self.net(state).float())
        return self.grid.to_native(self.probability)[0].numpy()


register_method(KIND, lambda model_path: InterCNNMethod(model_path, "gaussian"))
register_method("deepigeos", lambda model_path: InterCNNMethod(model_path, "geodesic"))


def supervised_episode(net: InterCNN, config: NetworkConfig, batch: EpisodeBatch, rounds: int, clicks_per_round: int,
                       balance: float) -> tuple[torch.Tensor, dict]:
    """Rounds of the seeded simulated user; cross-entropy on each round's prediction."""
    label, valid = batch.label.bool(), batch.valid.float()
    users = [SimulatedUser(batch.label[b].numpy() & batch.valid[b].numpy(), seed=s, style=style)
             for b, (s, style) in enumerate(zip(batch.user_seeds, batch.user_styles))]
    clicks: list[list[Click]] = [[] for _ in users]
    probability = batch.start.float() / 10.0
    weights = class_weights(valid, label.float(), balance)
    loss = torch.zeros(())
    for t in range(rounds):
        prediction = ((probability > 0.5) & (valid > 0)).numpy()
        for b, user in enumerate(users):
            clicks[b].extend(user.clicks(prediction[b], clicks_per_round, t))
        hint = torch.from_numpy(np.stack([encode_hints(config.hint_encoding, image, c)
                                          for image, c in zip(batch.image.numpy(), clicks)]))
        state = build_state(batch.image, probability, hint).contiguous(memory_format=torch.channels_last_3d)
        logit = net(state)
        loss = loss + masked_mean(F.binary_cross_entropy_with_logits(logit, label.float(), reduction="none"), weights)
        probability = torch.sigmoid(logit.detach())
    total = loss / rounds
    return total, {"loss": total.item(), "dice": batch_dice((probability > 0.5) & (valid > 0), label & (valid > 0))}


def train(dataset_dirs: list[str], out, recipe: TrainingConfig, network: NetworkConfig | None = None) -> Path:
    """Train an InterCNN (supervised.train_supervised: ``recipe``'s epochs, rate, seed, crops and
    users); each step's episodes get ``recipe.rounds`` rounds of a number of clicks drawn from
    ``recipe.clicks_per_round``."""
    network = network or NetworkConfig()

    def step_loss(net, batch, rng, balance, _progress):
        clicks = int(rng.integers(*recipe.clicks_per_round, endpoint=True))
        return supervised_episode(net, network, batch, recipe.rounds, clicks, balance)

    return train_supervised(lambda: InterCNN(network), step_loss,
                            lambda net, path, meta: save_intercnn(net, network, path, meta),
                            lambda net: in_memory(InterCNNMethod, net=net, config=network), dataset_dirs, out, recipe,
                            network.min_working_voxels)


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m research.baselines.intercnn", __doc__.split("\n\n")[0])
    parser.add_argument("--hint-encoding", choices=HINT_ENCODINGS, default="gaussian",
                        help="geodesic: the DeepIGeoS row (default: gaussian, InterCNN)")
    args = parser.parse_args(argv)
    try:
        recipe = training_recipe(args)
    except InputError as error:
        parser.error(str(error))
    print(f"wrote {train(args.dataset, args.out, recipe, NetworkConfig(hint_encoding=args.hint_encoding))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

