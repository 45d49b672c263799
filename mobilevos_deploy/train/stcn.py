"""The released STCN (Cheng et al., NeurIPS 2021) as the distillation teacher.

``--teacher stcn.pth`` takes the checkpoint published with STCN: a plain state_dict of
its evaluation network (model/eval_network.py), 405 tensors, 54.43 M parameters. This
module has that architecture and those key names, written from STCN's published code:

  key_encoder    torchvision ResNet50 up to layer3 (conv1, bn1, res2 = layer1, layer2,
                 layer3): f4 256, f8 512, f16 1024 channels
  key_proj       KeyProjection: 3x3 conv 1024 → 64 (the key)
  key_comp       3x3 conv 1024 → 512 (the query features)
  value_encoder  STCN's ResNet18 (convs with biases) on frame + mask + other objects
                 (5 channels) up to layer3 (256), then ``fuser``: a FeatureFusionBlock
                 (ResBlock 1280 → 512, CBAM, ResBlock) with the key encoder's f16
  decoder        compress ResBlock 1024 → 512, up_16_8, up_8_4, pred 256 → 1, x4

Read-out as STCN's *training* network: L2 affinity (2 k_m . q - |k_m|^2) / sqrt(64) over
all memory positions, max subtracted, full softmax (no top-k). Frames come in as RGB
[0, 1] and are normalised here (STCN normalises in its data loader, with ImageNet's
mean and std). One object at a time; its "other objects" channel is zero, as STCN's
encode_value for k = 1. Output probabilities pass through STCN's soft aggregation
(``aggregate``: background = prod(1 - p), clamped to [1e-7, 1 - 1e-7], softmax of the
odds' logs), and the memory is written from the aggregated probability, as STCN's
inference does; the logit given to distillation is that aggregated probability's logit
(for one object 2x the decoder's, saturating at +-16.1).

Some released files hold a 4-channel ``value_encoder.conv1.weight`` (from before the
"other objects" channel): it is padded with a zero kernel, as STCN's eval_davis.py does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UserError
from .teacher_protocol import TeacherFrame, TeacherMemory, run_clip

KIND = "stcn"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KEY_DIM = 64
FEATURE_DIM = 256  # channels of the representation before ``pred``
AGGREGATE_EPS = 1e-7


class Bottleneck(nn.Module):
    """torchvision's ResNet50 block (stride on the 3x3 conv, no conv biases)."""

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * 4
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class BiasedBasicBlock(nn.Module):
    """The ResNet18 block of STCN's mod_resnet.py: torchvision's, with conv biases."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _layer(block: type, in_ch: int, out_ch: int, stride: int, count: int) -> nn.Sequential:
    if block is Bottleneck:  # out_ch is the bottleneck width
        blocks = [Bottleneck(in_ch, out_ch, stride)]
        blocks += [Bottleneck(out_ch * 4, out_ch, 1) for _ in range(count - 1)]
    else:
        blocks = [block(in_ch, out_ch, stride)]
        blocks += [block(out_ch, out_ch, 1) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


class ResBlock(nn.Module):
    """STCN's pre-activation ResBlock; the 3x3 ``downsample`` shortcut when widths differ."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_ch, out_ch, 3, padding=1) if in_ch != out_ch else None
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        return (x if self.downsample is None else self.downsample(x)) + r


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction),
                                 nn.ReLU(), nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class BasicConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = BasicConv(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)  # noqa: N815 - STCN's key names
        self.SpatialGate = SpatialGate()  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block1 = ResBlock(in_ch, out_ch)
        self.attention = CBAM(out_ch)
        self.block2 = ResBlock(out_ch, out_ch)

    def forward(self, x: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        x = self.block1(torch.cat([x, f16], dim=1))
        return self.block2(x + self.attention(x))


class KeyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.res2 = _layer(Bottleneck, 64, 64, 1, 3)
        self.layer2 = _layer(Bottleneck, 256, 128, 2, 4)
        self.layer3 = _layer(Bottleneck, 512, 256, 2, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: B x 3 x H x W normalised → f16 B x 1024 x H/16, f8 B x 512, f4 B x 256
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        return self.layer3(f8), f8, f4


class ValueEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(5, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _layer(BiasedBasicBlock, 64, 64, 1, 2)
        self.layer2 = _layer(BiasedBasicBlock, 64, 128, 2, 2)
        self.layer3 = _layer(BiasedBasicBlock, 128, 256, 2, 2)
        self.fuser = FeatureFusionBlock(1024 + 256, 512)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, mask: torch.Tensor,
                other: torch.Tensor) -> torch.Tensor:
        # image: B x 3 x H x W normalised, masks B x 1 x H x W → B x 512 x H/16 x W/16
        x = torch.cat([image, mask, other], dim=1)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fuser(x, key_f16)


class KeyProjection(nn.Module):
    def __init__(self, in_ch: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_ch, key_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_proj(x)


class UpsampleBlock(nn.Module):
    def __init__(self, skip_ch: int, up_ch: int, out_ch: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_ch, up_ch, 3, padding=1)
        self.out_conv = ResBlock(up_ch, out_ch)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(self.skip_conv(skip) + up)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.compress = ResBlock(1024, 512)
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def features(self, x: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """B x 1024 x h x w (read-out ++ query) → B x 256 x 4h x 4w, before ``pred``."""
        return F.relu(self.up_8_4(f4, self.up_16_8(f8, self.compress(x))))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.pred(features), scale_factor=4.0, mode="bilinear",
                             align_corners=False)


def aggregated_logit(prob: torch.Tensor) -> torch.Tensor:
    """One object's probability (B x 1 x H x W) → the logit of its probability after
    STCN's soft aggregation with the background (``aggregate`` in its model/aggregate.py:
    background prod(1 - p), both clamped to [1e-7, 1 - 1e-7], softmax of log-odds)."""
    probs = torch.cat([1.0 - prob, prob], dim=1).clamp(AGGREGATE_EPS, 1.0 - AGGREGATE_EPS)
    odds = torch.log(probs / (1.0 - probs))
    return odds[:, 1:] - odds[:, :1]  # log(softmax[1] / softmax[0])


class STCNTeacher(nn.Module):
    """STCN's evaluation network with its training read-out, one object at a time."""

    kind = KIND
    feature_dim = FEATURE_DIM

    def __init__(self, mem_every: int = 5) -> None:
        super().__init__()
        if mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {mem_every}")
        self.mem_every = mem_every
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder()
        self.key_proj = KeyProjection(1024, KEY_DIM)
        self.key_comp = nn.Conv2d(1024, 512, 3, padding=1)
        self.decoder = Decoder()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def normalise(self, frame: torch.Tensor) -> torch.Tensor:
        return (frame - self.mean) / self.std

    def encode_key(self, frame: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """RGB [0, 1] frame → (key 64, query 512, f16 1024, f8, f4), as STCN's encode_key."""
        f16, f8, f4 = self.key_encoder(self.normalise(frame))
        return self.key_proj(f16), self.key_comp(f16), f16, f8, f4

    def encode_value(self, frame: torch.Tensor, f16: torch.Tensor,
                     prob: torch.Tensor) -> torch.Tensor:
        """prob: B x 1 x H x W (aggregated) → B x 512 x h x w; no other objects."""
        return self.value_encoder(self.normalise(frame), f16, prob, torch.zeros_like(prob))

    def read(self, memory: TeacherMemory, key: torch.Tensor) -> torch.Tensor:
        """STCN's training read-out: full softmax over every memory position."""
        b, ck, h, w = key.shape
        q = key.flatten(2)  # B x Ck x HW
        mk, mv = memory.keys, memory.values  # B x Ck x N, B x Cv x N
        affinity = (2 * mk.transpose(1, 2) @ q - mk.pow(2).sum(1).unsqueeze(2)) / math.sqrt(ck)
        affinity = torch.softmax(affinity - affinity.amax(dim=1, keepdim=True), dim=1)
        return (mv @ affinity).view(b, mv.shape[1], h, w)

    def start(self, frame: torch.Tensor, mask: torch.Tensor) -> TeacherMemory:
        """Frame 0 and its given mask (B x 1 x H x W) → the memory. The given mask is
        aggregated with the background first, as STCN does."""
        key, _, f16, _, _ = self.encode_key(frame)
        prob = torch.sigmoid(aggregated_logit(mask))
        value = self.encode_value(frame, f16, prob)
        return TeacherMemory(key.flatten(2), value.flatten(2), 0)

    def step(self, frame: torch.Tensor, memory: TeacherMemory,
             remember: bool = True) -> tuple[TeacherFrame, TeacherMemory]:
        t = memory.frame + 1
        key, query, f16, f8, f4 = self.encode_key(frame)
        readout = self.read(memory, key)
        features = self.decoder.features(torch.cat([readout, query], dim=1), f8, f4)
        logits = aggregated_logit(torch.sigmoid(self.decoder.head(features)))
        keys, values = memory.keys, memory.values
        if remember and t % self.mem_every == 0:
            value = self.encode_value(frame, f16, torch.sigmoid(logits))
            keys = torch.cat([keys, key.flatten(2)], dim=2)
            values = torch.cat([values, value.flatten(2)], dim=2)
        return TeacherFrame(features, logits), TeacherMemory(keys, values, t)

    def clip(self, frames: torch.Tensor, first_mask: torch.Tensor,
             present: torch.Tensor | None = None) -> list[TeacherFrame]:
        if present is not None:
            raise UserError("the released STCN teacher distils one object per clip here; "
                            "train with --objects 1, or distil from a teacher of ours "
                            "(mvos-train --model teacher), which trains several jointly")
        return run_clip(self, frames, first_mask)


def is_stcn_state(obj: object) -> bool:
    return isinstance(obj, dict) and "key_proj.key_proj.weight" in obj \
        and "value_encoder.fuser.block1.conv1.weight" in obj


def load_stcn(path: Path, state: dict, mem_every: int = 5) -> STCNTeacher:
    """The released STCN state_dict (already read with weights_only=True) → the teacher."""
    teacher = STCNTeacher(mem_every)
    state = dict(state)
    conv1 = state.get("value_encoder.conv1.weight")
    if isinstance(conv1, torch.Tensor) and conv1.dim() == 4 and conv1.shape[1] == 4:
        state["value_encoder.conv1.weight"] = torch.cat(
            [conv1, torch.zeros_like(conv1[:, :1])], dim=1)  # eval_davis.py's padding
    ours = teacher.state_dict()
    for key in ours:  # BatchNorm's step counters, if a file left them out
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = ours[key]
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(ours[k].shape)})" for k in ours
              if k in state and getattr(state[k], "shape", None) != ours[k].shape]
    for problem, keys in (("missing", missing), ("unexpected", unexpected),
                          ("mis-shaped", shapes)):
        if keys:
            more = f", ... and {len(keys) - 5} more" if len(keys) > 5 else ""
            raise CheckpointError(f"{path}: not STCN's released network: {problem} tensors: "
                                  f"{', '.join(keys[:5])}{more}")
    teacher.load_state_dict(state, strict=True)
    return teacher.eval()
