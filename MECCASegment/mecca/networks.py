"""The two networks of MECCA: the P-Net actor-critic S and the action-confidence network C.

Both follow method.md: a trunk of dilated 3x3x3 blocks (P-Net), optionally behind a stride-2
first convolution so the trunk runs at half resolution. A half-resolution trunk would blur the
boundary, so its output goes through a small full-resolution fusion head that sees the input
state again (image, probability, hint) before the per-voxel outputs.

Blocks are residual and have no normalisation layer: ROIs vary in size from one call to the next
and batches are one or two volumes, where batch or instance statistics would be noisy and slow.

Two architectures (``NetworkConfig.architecture``):

- ``joint`` (the paper's, every model before the split): each network sees the whole state
  (image, probability, hint) at every step.
- ``split``: the image does not change within a session or an episode, so an image encoder sees
  it once per ROI (``MeccaModel.image_features``) and light heads see its features with the
  probability and the hint at every step, for the policy, the value and the confidence alike (as
  promptable segmenters split image encoder and prompt decoder).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .cpu_kernels import Conv3d, fuse_in_slabs, native_bfloat16, upsample
from .defaults import INFERENCE_DEFAULTS
from .environment import NUM_ACTIONS
from .hints import HINT_ENCODINGS

STATE_CHANNELS = 3  # normalised image, probability, hint
ARCHITECTURES = ("joint", "split")
SPLIT_ONLY = ("architecture", "encoder_width", "encoder_dilations")  # NetworkConfig fields a joint model does not use
NETWORK_NAMES = ("encoder", "policy", "confidence")  # a model file's weight prefixes
QUANTILE_BINS = 4096
ImageFeatures = tuple[torch.Tensor, torch.Tensor]  # the split architecture's encoder output (ImageEncoder)
# Session defaults a model file carries (MeccaModel.inference). lean_correction is subtracted from the
# three "up" action scores in every round after the first: training up-weights the foreground's
# reward (episodes.class_weights), so a policy trained so leans towards "up"; in the first round that
# lean finds more of the object from a few clicks, later it keeps growing the mask past the clicks
# that say "less" (research/NOTEBOOK.md, "Lower 'up' scores after the first round").
CONFIDENCE_CHANNELS = STATE_CHANNELS + 1  # plus the signed action
ACTION_SCALE = 2.5  # maps the largest step, 0.4, to 1 inside the confidence head


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of both networks; stored in every checkpoint so a file rebuilds its model."""

    width: int = 16
    stride: int = 2
    trunk_dilations: tuple[int, ...] = (1, 2, 4)
    head_dilations: tuple[int, ...] = (8, 4)
    fusion_channels: int = 8
    # Output channels of the full-resolution fusion convolution. oneDNN computes output channels in
    # blocks of 16, so 16 take the time of 8 (docs/performance.md). None: fusion_channels, as in
    # files written before this setting existed.
    fusion_width: int | None = 16
    confidence_width: int = 16
    confidence_dilations: tuple[int, ...] = (1, 2, 4)
    model: str = "mecca"  # what the file holds; the research baselines write their own kinds
    # ROIs under this many voxels are enlarged before the networks see them (working_grid.py), in
    # training as in use; None: the ROI's own voxels (files written before this setting existed)
    min_working_voxels: int | None = 64**3
    # how clicks become the hint channel (hints.encode_hints); files written before this setting
    # existed used the Gaussian
    hint_encoding: str = "gaussian"
    # "joint" or "split" (module docstring); files written before this setting existed are joint.
    # A split model's heads use width/head_dilations (policy, value) and confidence_width/
    # confidence_dilations (confidence) on the encoder's features
    architecture: str = "joint"
    encoder_width: int = 24
    encoder_dilations: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self):
        if self.model != "mecca":
            raise ValueError(f"a {self.model!r} model (a baseline of the research harness, research/baselines/), "
                             "not a MECCA model")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        for name in ("width", "confidence_width", "fusion_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.fusion_width is not None and self.fusion_width < 1:
            raise ValueError(f"fusion_width must be positive or None, got {self.fusion_width}")
        if self.min_working_voxels is not None and self.min_working_voxels < 1:
            raise ValueError(f"min_working_voxels must be positive or None, got {self.min_working_voxels}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.encoder_width < 1:
            raise ValueError(f"encoder_width must be positive, got {self.encoder_width}")
        if self.hint_encoding not in HINT_ENCODINGS:
            raise ValueError(f"hint_encoding must be one of {HINT_ENCODINGS}, got {self.hint_encoding!r}")

    def to_dict(self) -> dict:
        """The settings as a file stores them; a joint model's leave out the split architecture's, so
        its files read as before in versions that do not know them."""
        values = asdict(self)
        if self.architecture == "joint":
            for name in SPLIT_ONLY:
                values.pop(name)
        return values

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network settings {sorted(unknown)}: the file was written by a newer version")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        values.setdefault("min_working_voxels", None)  # older files: trained on the ROI's own voxels
        values.setdefault("fusion_width", None)  # older files: as wide as fusion_channels
        return cls(**values)

    @property
    def fusion_out_channels(self) -> int:
        return self.fusion_width or self.fusion_channels


class DilatedBlock(nn.Module):
    """Two dilated 3x3x3 convolutions with a residual connection (one P-Net block)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv1 = Conv3d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = Conv3d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.kaiming_normal_(self.conv1.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv1.bias)
        # Small second conv: each block starts close to the identity, so a deep stack without
        # normalisation trains from the first step.
        nn.init.normal_(self.conv2.weight, std=1e-3)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on fresh convolution outputs (autograd-safe): two fewer full-size tensors per block.
        return F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)).add_(x), inplace=True)


class Encoder(nn.Module):
    """First convolution (stride 1 or 2) followed by a stack of dilated blocks."""

    def __init__(self, in_channels: int, width: int, stride: int, dilations: tuple[int, ...]):
        super().__init__()
        self.stem = Conv3d(in_channels, width, 3, stride=stride, padding=1)
        nn.init.kaiming_normal_(self.stem.weight, nonlinearity="relu")
        nn.init.zeros_(self.stem.bias)
        self.blocks = nn.Sequential(*(DilatedBlock(width, d) for d in dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.relu(self.stem(x), inplace=True))


class FusionHead(nn.Module):
    """Per-voxel outputs at full resolution from trunk features and the full-resolution input.

    With stride 1 it is a 1x1x1 convolution. With stride 2 the features are reduced, upsampled
    trilinearly, concatenated with the input and passed through one 3x3x3 convolution, so
    boundaries are decided at the input's resolution.
    """

    def __init__(self, width: int, in_channels: int, out_channels: int, stride: int, fusion_channels: int,
                 fusion_width: int, zero_init: bool):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.out = Conv3d(width, out_channels, 1)
        else:
            self.reduce = Conv3d(width, fusion_channels, 1)
            self.fuse = Conv3d(fusion_channels + in_channels, fusion_width, 3, padding=1)
            self.out = Conv3d(fusion_width, out_channels, 1)
        if zero_init:  # a uniform policy / neutral value before any training
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.out(features)
        coarse = self.reduce(features)
        if (torch.is_grad_enabled() or inputs.device.type != "cpu" or inputs.shape[2] != 2 * coarse.shape[2]
                or inputs.shape[2:].numel() <= cpu_kernels.SLAB_VOXELS):
            return self._fuse(upsample(coarse, inputs.shape[2:]), inputs)
        return fuse_in_slabs(self._fuse, coarse, inputs, self.out.out_channels)

    def _fuse(self, upsampled: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fuse(torch.cat([upsampled, inputs], dim=1)), inplace=True))

    @torch.no_grad()
    def embed(self, narrower: FusionHead) -> None:
        """Take over a narrower head's weights so that this head computes exactly what it did: the
        extra fusion channels keep their fresh incoming weights and get zero outgoing weights, so
        training can put them to use from the first step without changing the starting point."""
        if self.stride == 1:
            self.load_state_dict(narrower.state_dict())
            return
        kept = narrower.fuse.out_channels
        self.reduce.load_state_dict(narrower.reduce.state_dict())
        self.fuse.weight[:kept] = narrower.fuse.weight
        self.fuse.bias[:kept] = narrower.fuse.bias
        self.out.weight.zero_()
        self.out.weight[:, :kept] = narrower.out.weight
        self.out.bias.copy_(narrower.out.bias)


class PolicyValueNet(nn.Module):
    """Segmentation network S: per-voxel logits over the 6 actions and a per-voxel value."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        c = config
        self.trunk = Encoder(STATE_CHANNELS, c.width, c.stride, c.trunk_dilations)
        self.policy_blocks = nn.Sequential(*(DilatedBlock(c.width, d) for d in c.head_dilations))
        self.policy_out = FusionHead(c.width, STATE_CHANNELS, NUM_ACTIONS, c.stride, c.fusion_channels,
                                     c.fusion_out_channels, True)
        self.value_blocks = nn.Sequential(*(DilatedBlock(c.width, d) for d in c.head_dilations))
        self.value_out = Conv3d(c.width, 1, 1)
        nn.init.zeros_(self.value_out.weight)
        nn.init.zeros_(self.value_out.bias)

    def forward(self, state: torch.Tensor, with_value: bool = True):
        """state (B, 3, D, H, W) -> logits (B, 6, D, H, W), value (B, 1, D, H, W) or None.

        The value head is only needed for training; inference skips it.
        """
        features = self.trunk(state)
        logits = self.policy_out(self.policy_blocks(features), state)
        if not with_value:
            return logits, None
        value = self.value_out(self.value_blocks(features))
        if value.shape[2:] != state.shape[2:]:
            value = upsample(value, state.shape[2:])
        return logits, value


class ConfidenceNet(nn.Module):
    """Action-confidence network C(s, a): logit of "the direction of a agrees with the label".

    The trunk sees (s, a) with a as a signed channel, as method.md says. The output must still
    react to each voxel's own action at full resolution (neighbouring voxels sample different
    actions while training), which a half-resolution output cannot. So the head predicts two
    maps, u and v, upsamples them and returns u + v * a per voxel: a logit that is affine in the
    voxel's own action. Because the target only depends on the sign of a and on the label, the
    best C has this form (u = 0, v = the label's logit scaled), at the cost of two upsampled
    channels instead of a full-resolution convolution.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        c = config
        self.trunk = Encoder(CONFIDENCE_CHANNELS, c.confidence_width, c.stride, c.confidence_dilations)
        self.out = Conv3d(c.confidence_width, 2, 1)

    def forward(self, state: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """state (B, 3, ...), signed action values (B, ...) in [-0.4, 0.4] -> logits (B, ...)."""
        action = action_values.unsqueeze(1).to(state.dtype)
        maps = self.out(self.trunk(torch.cat([state, action], dim=1)))
        if maps.shape[2:] != state.shape[2:]:
            maps = upsample(maps, state.shape[2:])
        return maps[:, 0] + maps[:, 1] * action[:, 0] * ACTION_SCALE


def quantile_channel(image: torch.Tensor) -> torch.Tensor:
    """Each volume's intensities replaced by their rank within it (the empirical distribution
    function, from a QUANTILE_BINS-bin histogram, linear within a bin), scaled to zero mean and unit
    variance: (B, 1, ...) -> (B, 1, ...).

    Why, beside the z-score: in a head-and-neck CT ROI air and bone set the z-score's spread, and
    the 30-50 HU between a parotid, fat and muscle become a tenth of a standard deviation; by rank
    the soft tissues, which fill most of the ROI, fill most of the range. The rank does not depend
    on the modality, the scanner's scale or any increasing change of contrast (MRI's gamma, a CT
    window), so CT and MRI reach the encoder alike. A histogram, not a sort: exact ranks took 0.7 s
    per 128³ volume on this project's CPU, a quarter of a training step; the input is the ROI's
    z-score, clipped to its 0.5-99.5 percentiles, so no far outlier empties the bins."""
    values = image.float()
    out = torch.empty_like(values)
    for volume, target in zip(values, out):
        low, high = float(volume.min()), float(volume.max())
        if high <= low:
            target.zero_()
            continue
        counts = torch.histc(volume, QUANTILE_BINS, low, high)
        below = torch.cumsum(counts, 0) - counts
        position = (volume - low) * (QUANTILE_BINS / (high - low))
        bins = position.long().clamp_(0, QUANTILE_BINS - 1)
        rank = below[bins] + (position - bins).clamp_(0, 1) * counts[bins]
        target.copy_((rank / volume.numel() - 0.5) * 12 ** 0.5)
    return out.to(image.dtype)


class ImageEncoder(nn.Module):
    """The split architecture's image encoder, run once per ROI (or episode): the normalised image
    and its quantile channel -> (features at the trunk's resolution, a few full-resolution
    features that PromptFusionHead adds at every step)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.body = Encoder(2, config.encoder_width, config.stride, config.encoder_dilations)
        self.full = Conv3d(2, config.fusion_out_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, D, H, W) normalised -> (B, encoder_width, D', H', W'), (B, fusion width, D, H, W)."""
        image = image[:, None]
        inputs = torch.cat([image, quantile_channel(image)], dim=1).contiguous(memory_format=torch.channels_last_3d)
        return self.body(inputs), self.full(inputs)


def _prompts(state: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The state's probability and hint channels, every ``stride``-th voxel (the centres of a
    stride-2 convolution's outputs), channels-last."""
    prompts = state[:, 1:, ::stride, ::stride, ::stride] if stride > 1 else state[:, 1:]
    return prompts.contiguous(memory_format=torch.channels_last_3d)


def _head_input(features: ImageFeatures, state: torch.Tensor, stride: int) -> torch.Tensor:
    """The encoder's features with the probability and hint on their grid."""
    return torch.cat([features[0], _prompts(state, stride).to(features[0].dtype)],
                     dim=1).contiguous(memory_format=torch.channels_last_3d)


class PromptFusionHead(nn.Module):
    """The split architecture's full-resolution outputs, per step: the light head's features
    brought up by a learned 2x upsampling (a 2x2x2 transposed convolution; trilinear interpolation
    of 16 bfloat16 channels takes 3 times as long on the CPU), plus the image's full-resolution
    features (ImageEncoder, once per ROI), plus a 3x3x3 convolution of the full-resolution
    probability and hint, then per-voxel outputs. The boundary is placed at the input's
    resolution, as FusionHead does, at about half its cost per step (at 96³ on one thread: 14 ms
    for the upsampling instead of 45, 20 ms for the 3x3x3 convolution instead of 58)."""

    def __init__(self, width: int, fusion_width: int, out_channels: int, stride: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(width, fusion_width, 2, stride=2) if stride == 2 else Conv3d(width, fusion_width, 1)
        self.prompts = Conv3d(STATE_CHANNELS - 1, fusion_width, 3, padding=1)
        self.out = Conv3d(fusion_width, out_channels, 1)
        nn.init.zeros_(self.out.weight)  # a uniform policy before any training
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor, image_full: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        depth, height, width = state.shape[2:]
        up = self.up(hidden)[:, :, :depth, :height, :width]
        return self.out(F.relu(up + image_full + self.prompts(_prompts(state)), inplace=True))


class LightPolicyHead(nn.Module):
    """The split architecture's segmentation network S per step: the image's features with the
    probability and hint -> action logits at full resolution (PromptFusionHead) and the value."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        c = config
        self.stride = c.stride
        self.entry = Conv3d(c.encoder_width + STATE_CHANNELS - 1, c.width, 1)
        self.blocks = nn.Sequential(*(DilatedBlock(c.width, d) for d in c.head_dilations))
        self.policy_out = PromptFusionHead(c.width, c.fusion_out_channels, NUM_ACTIONS, c.stride)
        self.value_out = Conv3d(c.width, 1, 1)
        nn.init.zeros_(self.value_out.weight)
        nn.init.zeros_(self.value_out.bias)

    def forward(self, state: torch.Tensor, features: ImageFeatures, with_value: bool = True):
        """state (B, 3, D, H, W), features of its image -> logits (B, 6, D, H, W), value or None."""
        hidden = self.blocks(F.relu(self.entry(_head_input(features, state, self.stride)), inplace=True))
        logits = self.policy_out(hidden, features[1], state)
        if not with_value:
            return logits, None
        value = self.value_out(hidden)
        return logits, upsample(value, state.shape[2:]) if value.shape[2:] != state.shape[2:] else value


class LightConfidenceHead(nn.Module):
    """The split architecture's action-confidence network C per step: from the image's features
    with the probability and hint, the two maps u, v of ConfidenceNet (logit u + v * a, affine in
    the voxel's own action): C(s, -a) for eq. 3's symmetric term then costs nothing more."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        c = config
        self.stride = c.stride
        self.entry = Conv3d(c.encoder_width + STATE_CHANNELS - 1, c.confidence_width, 1)
        self.blocks = nn.Sequential(*(DilatedBlock(c.confidence_width, d) for d in c.confidence_dilations))
        self.out = Conv3d(c.confidence_width, 2, 1)

    def maps(self, state: torch.Tensor, features: ImageFeatures) -> torch.Tensor:
        """(B, 2, D, H, W): u and v at full resolution."""
        maps = self.out(self.blocks(F.relu(self.entry(_head_input(features, state, self.stride)), inplace=True)))
        return upsample(maps, state.shape[2:]) if maps.shape[2:] != state.shape[2:] else maps

    def forward(self, state: torch.Tensor, action_values: torch.Tensor,
                features: ImageFeatures) -> torch.Tensor:
        maps = self.maps(state, features)
        return maps[:, 0] + maps[:, 1] * action_values.to(maps.dtype) * ACTION_SCALE


@dataclass
class MeccaModel:
    """The pair of networks plus the metadata a checkpoint carries (config, training record)."""

    config: NetworkConfig
    policy: PolicyValueNet | LightPolicyHead
    confidence: ConfidenceNet | LightConfidenceHead
    metadata: dict = field(default_factory=dict)
    encoder: ImageEncoder | None = None  # the split architecture's

    @classmethod
    def create(cls, config: NetworkConfig | None = None, seed: int = 0) -> MeccaModel:
        config = config or NetworkConfig()
        torch.manual_seed(seed)
        if config.architecture == "split":
            encoder = ImageEncoder(config)
            return cls(config, LightPolicyHead(config), LightConfidenceHead(config), encoder=encoder)
        return cls(config, PolicyValueNet(config), ConfidenceNet(config))

    def image_features(self, image: torch.Tensor) -> ImageFeatures | None:
        """(B, D, H, W) normalised image -> what the split architecture's heads need of it (once per
        ROI or episode); None for the joint architecture, whose networks see the image every step."""
        if self.encoder is None:
            return None
        return self.encoder(image.to(self.dtype))

    def policy_outputs(self, state: torch.Tensor, features: ImageFeatures | None = None, with_value: bool = True):
        """S at one step: (logits, value or None). ``features``: ``image_features`` of the state's
        image, computed here when not given (split architecture; the joint one ignores them)."""
        if self.encoder is None:
            return self.policy(state, with_value)
        if features is None:
            features = self.image_features(state[:, 0])
        return self.policy(state, features, with_value)

    def confidence_pair(self, state: torch.Tensor, action_values: torch.Tensor,
                        features: ImageFeatures | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """C(s, a) and C(s, -a), eq. 3's symmetric pair: the joint C runs on both at once, the split
        one computes its maps once (its logit is affine in the action)."""
        if self.encoder is None:
            both = self.confidence(torch.cat([state, state]), torch.cat([action_values, -action_values]))
            return both[: len(state)], both[len(state):]
        if features is None:
            features = self.image_features(state[:, 0])
        maps = self.confidence.maps(state, features)
        scaled = maps[:, 1] * action_values.to(maps.dtype) * ACTION_SCALE
        return maps[:, 0] + scaled, maps[:, 0] - scaled

    def confidence_logits(self, state: torch.Tensor, action_values: torch.Tensor,
                          features: ImageFeatures | None = None) -> torch.Tensor:
        """C(s, a) at one step: the logit that the direction of each voxel's action is right."""
        if self.encoder is None:
            return self.confidence(state, action_values)
        if features is None:
            features = self.image_features(state[:, 0])
        return self.confidence(state, action_values, features)

    def with_fusion_width(self, fusion_width: int, seed: int = 0) -> MeccaModel:
        """The same model with a wider full-resolution fusion layer, computing exactly the same outputs
        until it is trained (fine-tuning an older model into the faster-per-FLOP layout)."""
        if fusion_width < self.config.fusion_out_channels:
            raise ValueError(f"the fusion layer can only be widened: it has {self.config.fusion_out_channels} "
                             f"channels, asked for {fusion_width}")
        wider = MeccaModel.create(replace(self.config, fusion_width=fusion_width), seed)
        for name, net in self.networks.items():
            target = wider.networks[name]
            heads = {key for key, module in net.named_modules() if isinstance(module, FusionHead)}
            target.load_state_dict({k: v for k, v in net.state_dict().items()
                                    if not any(k.startswith(head + ".") for head in heads)}, strict=False)
            for head in heads:
                target.get_submodule(head).embed(net.get_submodule(head))
        wider.metadata = dict(self.metadata)
        return wider.to(self.device)

    @property
    def networks(self) -> dict[str, nn.Module]:
        encoder = {"encoder": self.encoder} if self.encoder is not None else {}
        return {**encoder, "policy": self.policy, "confidence": self.confidence}

    @property
    def inference(self) -> dict:
        """The model's own session defaults (``lean_correction``, ``steps_per_round``), as its training
        run recorded them; files from before the setting get those the bundled model was used with, and
        settings of session levers since retired (a file's ``confidence_veto``) are dropped."""
        recorded = self.metadata.get("inference", {})
        return {key: recorded.get(key, default) for key, default in INFERENCE_DEFAULTS.items()}

    def to(self, device=None, memory_format=None) -> MeccaModel:
        options = {k: v for k, v in (("device", device), ("memory_format", memory_format)) if v is not None}
        for net in self.networks.values():
            net.to(**options)
        return self

    def eval(self) -> MeccaModel:
        for net in self.networks.values():
            net.eval()
        return self

    def train(self) -> MeccaModel:
        for net in self.networks.values():
            net.train()
        return self

    def named_parameters(self):
        for name, net in self.networks.items():
            for key, param in net.named_parameters():
                yield f"{name}.{key}", param

    def parameters(self):
        return (param for _, param in self.named_parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, net in self.networks.items() for k, v in net.state_dict().items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = {k.split(".", 1)[0] for k in tensors}
        if expected != set(self.networks):
            raise RuntimeError(f"the file holds networks {sorted(expected)}, the architecture needs {sorted(self.networks)}")
        for name, net in self.networks.items():
            net.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")},
                                strict=True)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    def action_scores(self, state: torch.Tensor, flip_average: bool = False,
                      features: dict | None = None) -> torch.Tensor:
        """The policy's per-voxel action scores at inference (B, 6, D, H, W); their argmax is the
        greedy action.

        ``flip_average``: the mean of the log-probabilities over the state and its flips along
        each of the three axes (test-time augmentation, 4 policy passes): +0.8 / +0.7 Dice at
        round 5 on hippocampus / left atrium (research/NOTEBOOK.md, "Averaging over flips").

        ``features``: a cache of the image's features by flip (None: as it is, 2-4: flipped along
        that axis), which a session keeps while its ROI stays; missing entries are computed into it.
        """
        features = {} if features is None else features

        def scores(flip: int | None) -> torch.Tensor:
            flipped = state if flip is None else state.flip(flip).contiguous(memory_format=torch.channels_last_3d)
            if self.encoder is not None and flip not in features:
                features[flip] = self.image_features(flipped[:, 0])
            logits, _ = self.policy_outputs(flipped, features.get(flip), with_value=False)
            return logits if flip is None else logits.flip(flip)

        logits = scores(None)
        if not flip_average:
            return logits
        total = F.log_softmax(logits.float(), dim=1)
        for axis in (2, 3, 4):  # flip() loses the channels-last layout, which oneDNN needs to be fast
            total += F.log_softmax(scores(axis).float(), dim=1)
        return total / 4

    def prepare_for_inference(self, precision: str = "auto") -> MeccaModel:
        """Evaluation mode, channels-last weights, and the inference precision: "float32",
        "bfloat16", or "auto" (bfloat16 where the processor computes it natively: about twice as
        fast on such CPUs; docs/performance.md has what each costs in time and Dice).

        Channels-last keeps oneDNN from reordering every activation and makes the per-voxel argmax
        over the six actions a contiguous reduction (8x faster than over NCDHW)."""
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, got {precision!r}")
        if precision == "auto":
            precision = "bfloat16" if native_bfloat16(self.device) else "float32"
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        for net in self.networks.values():
            net.to(dtype=dtype, memory_format=torch.channels_last_3d)
        return self.eval()
