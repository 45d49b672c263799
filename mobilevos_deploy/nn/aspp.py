"""Atrous spatial pyramid pooling (DeepLabv3) on stride-16 features."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU


class ASPP(nn.Module):
    """1x1 branch, one dilated 3x3 branch per rate, and an image-pooling branch.

    The image-pooling branch is projected on its own and added with broadcasting, which is
    the same as a 1x1 projection of the concatenation but avoids materialising the pooled
    map at full size (no BROADCAST_TO in the exported graph).
    """

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_ch, out_ch, kernel=1, relu6=False)]
            + [ConvBNReLU(in_ch, out_ch, dilation=r, relu6=False) for r in rates]
        )
        self.pool_proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.ReLU())
        self.project = nn.Conv2d(out_ch * len(self.branches), out_ch, 1, bias=False)
        self.pool_project = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: B x in_ch x h x w
        main = self.project(torch.cat([b(x) for b in self.branches], dim=1))
        pooled = self.pool_project(self.pool_proj(x.mean(dim=(2, 3), keepdim=True)))
        return torch.relu(self.bn(main + pooled))
