"""UA-MT (Yu et al., MICCAI 2019), the semi-supervised row of the paper's Table 2: a mean teacher
whose consistency counts only where the teacher is certain.

The student is the automatic U-Net row's network (research/baselines/automatic.py: the same ROI,
crops, working grid and class-weighted cross-entropy on the labelled cases); the teacher is the
exponential moving average of its weights (decay 0.99), moved after every step. Every
unlabelled batch costs ``CONSISTENCY`` x ramp x the mean squared difference of the student's and
the teacher's foreground probability over the voxels whose teacher uncertainty (the entropy of the
mean of ``PASSES`` noisy teacher predictions) is under a threshold rising from 0.75 to 1 x ln 2;
the ramp is exp(-5 (1 - progress)^2). The authors' settings (their code, LA task), on the image with Gaussian
noise (SD 0.1, clipped at 0.2) for the teacher; as in their code the teacher sees the unlabelled
cases only (a labelled batch is the U-Net row's step). Where we differ: their V-Net and its dropout
(the teacher's passes differ here by their noise only), their Dice + cross-entropy loss (the
U-Net row's loss here, so that the U-Net trained on the labelled share alone differs from UA-MT by the
consistency term only), and Algorithm 1's alternation of a labelled and an unlabelled batch
instead of mixed batches.

    python -m research.baselines.ua_mt --dataset ../shared/data/LeftAtrium2018 --config RECIPE.json --epochs 16 --out ua-mt.safetensors

RECIPE holds ``{"labeled_fraction": 0.125, "rest_unlabeled": true}``; the file is an automatic
U-Net (``research.compare --methods u-net --u-net-model ...``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from mecca.episodes import EpisodeBatch
from mecca.errors import InputError
from mecca.networks import NetworkConfig
from mecca.recipe import TrainingConfig
from torch import nn

from .automatic import AutomaticMethod, build, save_automatic, supervised_loss
from .supervised import in_memory, train_supervised, training_parser, training_recipe

CONSISTENCY = 0.1  # the consistency term's weight at the end of the ramp
EMA_DECAY = 0.99
PASSES = 8  # noisy teacher predictions per batch for the uncertainty
NOISE_SD, NOISE_CLIP = 0.1, 0.2


def ramp(progress: float) -> float:
    """The authors' sigmoid ramp-up, exp(-5 (1 - t)^2) for t the share of training done."""
    return float(math.exp(-5.0 * (1.0 - min(max(progress, 0.0), 1.0)) ** 2))


class MeanTeacherLoss:
    """The step loss of UA-MT for supervised.train_supervised: it keeps the teacher, moved towards
    the student before each step (the student as the last optimiser step left it)."""

    def __init__(self):
        self.teacher: nn.Module | None = None
        self.steps = 0

    def _follow(self, student: nn.Module) -> None:
        if self.teacher is None:
            self.teacher = copy.deepcopy(student).requires_grad_(False)
            return
        decay = min(1.0 - 1.0 / (self.steps + 1), EMA_DECAY)  # the authors' faster start
        with torch.no_grad():
            for mean, weight in zip(self.teacher.parameters(), student.parameters()):
                mean.mul_(decay).add_(weight.detach(), alpha=1.0 - decay)

    def __call__(self, net: nn.Module, batch: EpisodeBatch, rng: np.random.Generator, balance: float,
                 progress: float) -> tuple[torch.Tensor, dict]:
        self._follow(net)
        self.steps += 1
        image = batch.image[:, None].contiguous(memory_format=torch.channels_last_3d)
        logit = net(image)
        if batch.labeled:
            return supervised_loss(logit, batch, balance)
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
        with torch.no_grad():
            passes = torch.stack([torch.sigmoid(self.teacher(image + (torch.randn(image.shape, generator=generator)
                                                                      * NOISE_SD).clamp(-NOISE_CLIP, NOISE_CLIP)))
                                  for _ in range(PASSES)])
            mean = passes.mean(0).clamp(1e-6, 1 - 1e-6)
            uncertainty = -(mean * mean.log() + (1 - mean) * (1 - mean).log())
            certain = (uncertainty < (0.75 + 0.25 * ramp(progress)) * math.log(2)).float() * batch.valid.float()
        difference = (torch.sigmoid(logit) - passes[0]) ** 2
        consistency = (difference * certain).sum() / (certain.sum() + 1e-16)
        loss = CONSISTENCY * ramp(progress) * consistency
        return loss, {"loss": loss.item(), "consistency": consistency.item(), "certain_share": float(certain.mean())}


def train(dataset_dirs: list[str], out, recipe: TrainingConfig, network: NetworkConfig | None = None) -> Path:
    """A U-Net trained as UA-MT's student on ``recipe``'s labelled share and its unlabelled rest."""
    if not recipe.rest_unlabeled or recipe.labeled_fraction >= 1.0:
        raise InputError("UA-MT learns from unlabelled cases: give a labeled_fraction under 1 and rest_unlabeled true "
                         "(a run on every label is the U-Net row: python -m research.baselines.automatic)")
    network = network or NetworkConfig()
    return train_supervised(lambda: build("u-net", network), MeanTeacherLoss(),
                            lambda net, path, meta: save_automatic(net, "u-net", network, path,
                                                                   {**meta, "semi_supervised": "ua-mt"}),
                            lambda net: in_memory(AutomaticMethod, net=net, architecture="u-net", config=network),
                            dataset_dirs, out, recipe, network.min_working_voxels, validation_rounds=1)


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("python -m research.baselines.ua_mt", __doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    try:
        print(f"wrote {train(args.dataset, args.out, training_recipe(args))}")
    except InputError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
