"""ResNet18 trunk truncated after layer3 (stride 16), written without torchvision."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.downsample(x))


class ResNet18Trunk(nn.Module):
    """Returns (f4, f8, f16) with 64, 128 and 256 channels."""

    channels = (64, 128, 256)

    def __init__(self, in_channels: int = 3, blocks: tuple[int, int, int] = (2, 2, 2)) -> None:
        # blocks per stage: (2, 2, 2) is ResNet18's, (3, 4, 6) ResNet34's (the teacher's)
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.layer1 = _stage(64, 64, 1, blocks[0])
        self.layer2 = _stage(64, 128, 2, blocks[1])
        self.layer3 = _stage(128, 256, 2, blocks[2])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: B x in_channels x H x W
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        return f4, f8, self.layer3(f8)


def _stage(in_ch: int, out_ch: int, stride: int, count: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride),
                         *(BasicBlock(out_ch, out_ch, 1) for _ in range(count - 1)))
