"""MobileNetV2 trunk truncated at stride 16 (Sandler et al. 2018), written without torchvision."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU

# (expansion t, output channels c, repeats n, first stride s) up to stride 16.
_STRIDE16_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV2Trunk(nn.Module):
    """Returns (f4, f8, f16) with 24, 32 and 96 channels."""

    channels = (24, 32, 96)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU(in_channels, 32, stride=2)]
        in_ch = 32
        self._taps: list[int] = []  # indices of the blocks whose outputs are f4, f8
        for t, c, n, s in _STRIDE16_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
            if c in (24, 32):
                self._taps.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: B x in_channels x H x W
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                taps.append(x)
        return taps[0], taps[1], x
