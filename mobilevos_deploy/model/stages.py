"""Deployable stages: tensor-only positional inputs and outputs, with a declared spec.

``InitStage``: frame + first mask → initial state.
``StepStage``: frame + state → mask probability + next state, the queue update inside.
The step's next-state outputs have the same order, shapes and layout as its state inputs,
so a deployed loop is ``prob, *state = step(frame, *state)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .config import StudentConfig
from .memory import MemoryState, flatten_hw, initial_state, push
from .student import Student

STRIDE = 16
STATE_NAMES = ("mem_keys", "mem_values", "mem_valid")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str  # e.g. "NCHW"; axes named as in mobilevos_deploy.nn

    @property
    def nbytes(self) -> int:
        n = 4 if self.dtype == "float32" else 2
        for d in self.shape:
            n *= d
        return n


def check_size(height: int, width: int) -> None:
    if height % STRIDE or width % STRIDE or height <= 0 or width <= 0:
        raise UserError(
            f"model input size must be a positive multiple of {STRIDE}, got {height}x{width}"
        )


def state_spec(cfg: StudentConfig, queue: int, height: int, width: int) -> list[TensorSpec]:
    check_size(height, width)
    h, w = height // STRIDE, width // STRIDE
    return [
        TensorSpec("mem_keys", (1, cfg.key_dim, queue * h * w), "float32", "B,Ck,Q*h*w"),
        TensorSpec("mem_values", (1, cfg.value_dim, queue * h * w), "float32", "B,Cv,Q*h*w"),
        TensorSpec("mem_valid", (1, 1, queue * h * w), "float32", "B,1,Q*h*w"),
    ]


class InitStage(nn.Module):
    """(frame B x 3 x H x W, mask B x 1 x H x W) → (mem_keys, mem_values, mem_valid)."""

    def __init__(self, student: Student, queue: int) -> None:
        super().__init__()
        self.student = student
        self.queue = queue

    def forward(self, frame: torch.Tensor, mask: torch.Tensor) -> MemoryState:
        enc = self.student.key_encoder(frame)
        value = self.student.encode_value(mask, enc.f16)
        return initial_state(enc.key, value, self.queue)


FP16_LOWEST = -65504.0


def pass_through(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a tensor of its own in the exported graph (a MAXIMUM with fp16's lowest
    finite value: the identity on anything a phone GPU can hold).

    Returned as it is, a state input would also be the graph's output tensor. LiteRT's
    CompiledModel binds one buffer to each signature input and output, and with an output
    that *is* an input it computed from garbage: on its GPU accelerator every queue-1
    export failed step parity (prob error 0.25) and the pass-through output read 1.8e38.
    A multiply by 1 or an add of 0 is folded away by the converters; a clamp is not.
    """
    return torch.clamp(x, min=FP16_LOWEST)


class StepStage(nn.Module):
    """(frame, mem_keys, mem_values, mem_valid) → (prob, mem_keys', mem_values', mem_valid').

    With ``with_readout`` the memory read-out (B x Cv x h*w) is returned last, for parity
    gates that must see more than the mask. At Q = 1 the memory never changes, so no value
    is encoded and the state passes through (``pass_through``).
    """

    def __init__(self, student: Student, queue: int, with_readout: bool = False) -> None:
        super().__init__()
        self.student = student
        self.queue = queue
        self.with_readout = with_readout

    def forward(
        self,
        frame: torch.Tensor,  # B x 3 x H x W, RGB in [0, 1]
        keys: torch.Tensor,  # B x Ck x N, N = Q*h*w
        values: torch.Tensor,  # B x Cv x N
        valid: torch.Tensor,  # B x 1 x N
    ) -> tuple[torch.Tensor, ...]:
        return self.segment(self.student.key_encoder(frame), keys, values, valid)

    def segment(self, enc, keys: torch.Tensor, values: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The step after the frame's encoding ``enc`` (the key encoder's output), so that
        several objects' states can share one encoding of the frame."""
        s = self.student
        readout = s.readout(keys, values, valid, enc.key)
        prob = torch.sigmoid(s.decoder(readout, enc.query, enc.f8, enc.f4))  # B x 1 x H x W
        state = MemoryState(keys, values, valid)
        if self.queue > 1:
            state = push(state, enc.key, s.encode_value(prob, enc.f16), self.queue)
        else:
            state = MemoryState(*(pass_through(t) for t in state))
        outputs = (prob, *state)
        return (*outputs, flatten_hw(readout)) if self.with_readout else outputs
