"""The MobileVOS student: key encoder, mask-only value encoder, memory read-out, decoder.

Shapes follow the convention in :mod:`mobilevos_deploy.nn`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.synthetic import moving_object_clip
from ..nn.aspp import ASPP
from ..nn.layers import ResBlock, UpsampleBlock
from ..nn.mobilenetv2 import InvertedResidual, MobileNetV2Trunk
from ..nn.readout import MemoryReadout
from ..nn.resnet18 import BasicBlock, ResNet18Trunk
from .config import StudentConfig
from .memory import computed_zeros, initial_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def trunk_channels(name: str) -> tuple[int, int, int]:
    """(f4, f8, f16) channels of the trunk ``make_trunk(name, ...)`` builds."""
    return ResNet18Trunk.channels if name in ("resnet18", "resnet34") else \
        MobileNetV2Trunk.channels


def make_trunk(name: str, in_channels: int) -> MobileNetV2Trunk | ResNet18Trunk:
    if name == "resnet18":
        return ResNet18Trunk(in_channels)
    if name == "resnet34":
        return ResNet18Trunk(in_channels, blocks=(3, 4, 6))
    return MobileNetV2Trunk(in_channels)


class KeyFeatures(NamedTuple):
    key: torch.Tensor  # B x Ck x h x w - query key, also the memory key of this frame
    query: torch.Tensor  # B x Cq x h x w - query-side features for the decoder
    f16: torch.Tensor  # B x C16 x h x w - trunk features, fused into the value
    f8: torch.Tensor  # B x C8 x 2h x 2w - decoder skip
    f4: torch.Tensor  # B x C4 x 4h x 4w - decoder skip


class EncodedFrame(NamedTuple):
    """Everything the stages after the key encoder read of one frame, object-independent:
    what the K-object loop computes once per frame (stages.EncodeStage)."""

    key: torch.Tensor  # B x Ck x h x w
    query: torch.Tensor  # B x Cq x h x w
    f16: torch.Tensor  # B x C16 x h x w - fused into the value
    skip8: torch.Tensor  # B x d16 x 2h x 2w - the decoder's skip convolution of f8
    skip4: torch.Tensor  # B x d8 x 4h x 4w - the decoder's skip convolution of f4


class KeyEncoder(nn.Module):
    """Frame → key, query features and skips. Normalises the [0, 1] RGB frame itself."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.trunk = make_trunk(cfg.key_backbone, 3)
        c16 = self.trunk.channels[2]
        self.key_proj = nn.Conv2d(c16, cfg.key_dim, 3, padding=1)
        self.query_proj = nn.Conv2d(c16, cfg.query_dim, 3, padding=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, frame: torch.Tensor) -> KeyFeatures:
        # frame: B x 3 x H x W, RGB in [0, 1]
        f4, f8, f16 = self.trunk((frame - self.mean) * self.inv_std)
        return KeyFeatures(self.key_proj(f16), self.query_proj(f16), f16, f8, f4)


class ValueEncoder(nn.Module):
    """Mask (not the frame) → MobileNetV2 → fused with the key trunk's f16 → Cv-channel value."""

    def __init__(self, cfg: StudentConfig, key_f16_channels: int) -> None:
        super().__init__()
        self.trunk = MobileNetV2Trunk(cfg.value_in_channels)
        fused_in = self.trunk.channels[2] + key_f16_channels
        self.fuse = nn.Conv2d(fused_in, cfg.value_dim, 1)
        self.refine = ResBlock(cfg.value_dim, cfg.value_dim)

    def forward(self, masks: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        # masks: B x 2 x H x W (object probability, other objects); key_f16: B x C16 x h x w
        _, _, v16 = self.trunk(masks)
        return self.refine(self.fuse(torch.cat([v16, key_f16], dim=1)))  # B x Cv x h x w


class Decoder(nn.Module):
    """STCN decoder: fuse read-out with query features, (ASPP), two upsampling stages, x4."""

    def __init__(self, cfg: StudentConfig, skip_channels: tuple[int, int]) -> None:
        super().__init__()
        d16, d8, d4 = cfg.decoder_dims
        self.compress = ResBlock(cfg.value_dim + cfg.query_dim, d16)
        self.aspp: nn.Module = ASPP(d16, d16, cfg.aspp_rates) if cfg.aspp else nn.Identity()
        self.up_16_8 = UpsampleBlock(skip_channels[1], d16, d8)
        self.up_8_4 = UpsampleBlock(skip_channels[0], d8, d4)
        self.pred = nn.Conv2d(d4, 1, 3, padding=1)

    def forward(
        self, readout: torch.Tensor, query: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        # readout: B x Cv x h x w, query: B x Cq x h x w → logit B x 1 x H x W
        return self.head(self.features(readout, query, f8, f4))

    def features(
        self, readout: torch.Tensor, query: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """The representation before the final conv and upsampling: B x d4 x 4h x 4w.
        This is Z of the distillation losses (mobilevos_deploy.train.losses)."""
        return self.joined(readout, query, *self.skips(f8, f4))

    def skips(self, f8: torch.Tensor, f4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The skip convolutions of both upsampling stages: they read the frame's trunk
        alone, so several objects share them (B x d16 x 2h x 2w, B x d8 x 4h x 4w)."""
        return self.up_16_8.skip_conv(f8), self.up_8_4.skip_conv(f4)

    def joined(self, readout: torch.Tensor, query: torch.Tensor, skip8: torch.Tensor,
               skip4: torch.Tensor) -> torch.Tensor:
        """``features`` from the skips already convolved (``skips``): the same operations."""
        x = self.aspp(self.compress(torch.cat([readout, query], dim=1)))
        return F.relu(self.up_8_4.join(skip4, self.up_16_8.join(skip8, x)))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """B x d4 x 4h x 4w features → B x 1 x H x W mask logit."""
        return F.interpolate(self.pred(features), scale_factor=4.0, mode="bilinear",
                             align_corners=False)


class Student(nn.Module):
    """The parts of one student; the queue logic lives in memory.py and stages.py."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.config = cfg
        self.key_encoder = KeyEncoder(cfg)
        c4, c8, c16 = self.key_encoder.trunk.channels
        self.value_encoder = ValueEncoder(cfg, c16)
        self.readout = MemoryReadout(cfg.key_dim)
        self.decoder = Decoder(cfg, (c4, c8))

    def encode_frame(self, frame: torch.Tensor) -> EncodedFrame:
        """frame B x 3 x H x W → what every object's segment and memorize read of it."""
        enc = self.key_encoder(frame)
        return EncodedFrame(enc.key, enc.query, enc.f16, *self.decoder.skips(enc.f8, enc.f4))

    def encode_value(self, prob: torch.Tensor, key_f16: torch.Tensor,
                     others: torch.Tensor | None = None) -> torch.Tensor:
        """prob: B x 1 x H x W object probability, others: B x 1 x H x W the other objects'
        summed probability (STCN's second channel; zero when there is one object)
        → B x Cv x h x w value."""
        if others is None:  # computed, not a constant the converter stores (H x W of zeros)
            others = computed_zeros(prob)
        return self.value_encoder(torch.cat([prob, others], dim=1), key_f16)


# Damped layers: the mask logits and the memory values stay O(1)-O(10), as in trained
# networks, so fp32 rounding stays well inside the export parity tolerances of 1e-4*(1+|x|).
_DAMPED = {"decoder.pred": 0.3, "value_encoder.fuse": 0.25}
# The last BatchNorm scale of every residual branch in the trunks (as in zero-gamma /
# Fixup inits): an undamped random trunk is so chaotic that fp16 weight rounding alone
# flips ~1 % of the mask, which a trained network would not do.
_RESIDUAL_GAMMA = 0.2


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions and zero biases; a damped orthogonal key projection and the
    damped layers above, so affinities, values and mask logits have trained-like spreads.

    PyTorch's default init shrinks activations layer by layer, so a random student's mask
    barely depends on its memory, and parity or queue tests could not see a memory bug.
    """
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if name.endswith("key_proj"):
            nn.init.orthogonal_(module.weight, gain=0.15)
        else:
            k = module.kernel_size
            fan_in = module.in_channels // module.groups * k[0] * k[1]
            gain = _DAMPED.get(name, 1.0)
            nn.init.normal_(module.weight, std=gain * (2.0 / fan_in) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, InvertedResidual) and module.use_residual:
                module.block[-1].weight.fill_(_RESIDUAL_GAMMA)
            elif isinstance(module, BasicBlock):
                module.bn2.weight.fill_(_RESIDUAL_GAMMA)
    with torch.no_grad():  # its inputs are post-ReLU: zero-mean weights centre the logits
        pred = model.get_submodule("decoder.pred").weight
        pred -= pred.mean()


@torch.no_grad()
def centre_logits(model: Student) -> None:
    """Data-dependent init of the mask bias: the median logit on a generated frame is 0.

    A random decoder otherwise marks a few scattered pixels as object; the mask IoU gates
    of an export then measure a handful of pixels and fail on rounding. With the bias
    centred, about half of each frame is "object" and IoU is a well-conditioned figure.
    """
    clip = moving_object_clip(2, 64, 96, seed=7)
    first = model.key_encoder(clip.frames[:1])
    state = initial_state(first.key, model.encode_value(clip.masks[:1, None], first.f16), 1)
    enc = model.key_encoder(clip.frames[1:])
    readout = model.readout(*state, enc.key)
    logit = model.decoder(readout, enc.query, enc.f8, enc.f4)
    model.decoder.pred.bias -= logit.median()


def build_student(cfg: StudentConfig, seed: int | None = 0, centre: bool = True) -> Student:
    """A student in eval mode; ``seed`` makes the random initialisation reproducible.

    ``centre=False`` skips the data-dependent bias (for students about to load weights).
    """
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = Student(cfg).eval()
        init_weights(model)
    if centre:
        centre_logits(model)
    return model
