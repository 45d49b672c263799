"""What a teacher with an infinite memory gives the training loop, whichever network it
is (teacher.Teacher, ours; stcn.STCNTeacher, the released STCN): ``start`` on the first
frame, ``step`` on each next one, and ``run_clip`` driving either over a clip."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class TeacherFrame(NamedTuple):
    features: torch.Tensor  # B x D x H/4 x W/4 - representation before the final conv
    logits: torch.Tensor  # B x 1 x H x W


class TeacherMemory(NamedTuple):
    keys: torch.Tensor  # B x Ck x N - every remembered frame, N grows by h*w per frame
    values: torch.Tensor  # B x Cv x N
    frame: int  # index of the last frame seen



def run_clip(teacher: nn.Module, frames: torch.Tensor,
             first_mask: torch.Tensor) -> list[TeacherFrame]:
    """A teacher's ``start``/``step`` over a clip. frames: B x T x 3 x H x W, first_mask:
    B x 1 x H x W → T-1 outputs (frames 1..); the last frame is not remembered."""
    memory = teacher.start(frames[:, 0], first_mask)
    out = []
    for t in range(1, frames.shape[1]):
        frame_out, memory = teacher.step(frames[:, t], memory, t < frames.shape[1] - 1)
        out.append(frame_out)
    return out
