"""Generated clips: a textured object moving over a textured background, with its masks.

Tests and the demo use these (nothing is downloaded). The object is an ellipse that drifts,
grows and shrinks; a second, differently textured ellipse passes over it as an occluder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Clip:
    frames: torch.Tensor  # T x 3 x H x W, RGB in [0, 1]
    masks: torch.Tensor  # T x H x W, 1.0 on the object (occluder removed)


def _texture(gen: torch.Generator, height: int, width: int, cells: int) -> torch.Tensor:
    low = torch.rand(1, 3, cells, cells, generator=gen)
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]


def _ellipse(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    return (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0).float()


def moving_object_clip(
    num_frames: int, height: int, width: int, seed: int = 0, occluder: bool = True
) -> Clip:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    background = _texture(gen, height, width, 6) * 0.6
    obj_tex = 0.4 + 0.6 * _texture(gen, height, width, 3)
    occ_tex = _texture(gen, height, width, 12)
    start = rng.uniform([0.3, 0.25], [0.5, 0.4]) * (height, width)
    velocity = rng.uniform(0.15, 0.35, size=2) * (height, width) / max(num_frames, 1)
    frames, masks = [], []
    for t in range(num_frames):
        cy, cx = start + velocity * t
        scale = 1.0 + 0.2 * np.sin(t / 4.0)
        obj = _ellipse(height, width, cy, cx, 0.2 * height * scale, 0.15 * width * scale)
        if occluder:
            ox = width * (1.1 - 1.2 * t / max(num_frames - 1, 1))
            occ = _ellipse(height, width, 0.55 * height, ox, 0.12 * height, 0.08 * width)
        else:
            occ = torch.zeros(height, width)
        visible = obj * (1.0 - occ)
        frame = background * (1 - obj) + obj_tex * obj
        frame = frame * (1 - occ) + occ_tex * occ
        frames.append(frame.clamp(0.0, 1.0))
        masks.append(visible)
    return Clip(torch.stack(frames), torch.stack(masks))
