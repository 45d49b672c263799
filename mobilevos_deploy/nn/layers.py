"""Small building blocks shared by the encoders and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Conv → BatchNorm → ReLU6/ReLU, the unit of both trunks."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        relu6: bool = True,
    ) -> None:
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """STCN's pre-activation residual block (no normalisation), 1x1 shortcut if widths differ."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        return self.shortcut(x) + r


class UpsampleBlock(nn.Module):
    """Decoder stage: skip features (3x3 conv) + 2x bilinear-upsampled input, then a ResBlock."""

    def __init__(self, skip_ch: int, up_ch: int, out_ch: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_ch, up_ch, 3, padding=1)
        self.out = ResBlock(up_ch, out_ch)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        # skip: B x skip_ch x 2h' x 2w', up: B x up_ch x h' x w'
        return self.join(self.skip_conv(skip), up)

    def join(self, projected: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """The block after its skip convolution: ``projected`` = skip_conv(skip) depends
        on the frame alone, so several objects can share it."""
        x = projected + F.interpolate(up, scale_factor=2.0, mode="bilinear",
                                      align_corners=False)
        return self.out(x)
