"""Deployable stages: tensor-only positional inputs and outputs, with a declared spec.

One object (the paper's benchmark pair):

``InitStage``: frame + first mask → initial state.
``StepStage``: frame + state → mask probability + next state, the queue update inside.
The step's next-state outputs have the same order, shapes and layout as its state inputs,
so a deployed loop is ``prob, *state = step(frame, *state)``.

K objects, the frame encoded once (STCN's multi-object semantics, mvos_deploy.model.objects):

``EncodeStage``: frame → the encoded frame (key, query, f16 and the decoder's two skip
convolutions), once per frame.
``StartStage``: encoded frame + one object's first mask + the other objects' masks summed
→ that object's initial state.
``SegmentStage``: encoded frame + one object's state → its probability (state unchanged).
``MemorizeStage``: encoded frame + one object's aggregated probability + the other
objects' aggregated sum + its state → its next state (queue > 1 only: at queue 1 the
memory is the first frame for good).

With one object the two loops compute the same thing: the other-objects channel is zero
and nothing is aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .config import StudentConfig
from .memory import MemoryState, flatten_hw, initial_state, push
from .student import EncodedFrame, Student

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
        enc = self.student.key_encoder(frame)  # no decoder here: the skips are not needed
        value = self.student.encode_value(mask, enc.f16)
        return initial_state(enc.key, value, self.queue)


def read_logit(student: Student, enc: EncodedFrame,
               state: MemoryState) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoded frame read against one object's memory → (mask logit B x 1 x H x W,
    the read-out B x Cv x h x w)."""
    readout = student.readout(*state, enc.key)
    logit = student.decoder.head(student.decoder.joined(readout, enc.query, enc.skip8,
                                                        enc.skip4))
    return logit, readout


def read_prob(student: Student, enc: EncodedFrame,
              state: MemoryState) -> tuple[torch.Tensor, torch.Tensor]:
    """``read_logit`` with the logit made a probability B x 1 x H x W."""
    logit, readout = read_logit(student, enc, state)
    return torch.sigmoid(logit), readout


def memorize(student: Student, queue: int, state: MemoryState, key: torch.Tensor,
             f16: torch.Tensor, prob: torch.Tensor,
             others: torch.Tensor | None = None) -> MemoryState:
    """The frame written into one object's queue from ``prob`` (and the other objects'
    sum ``others``; None: zero). At queue 1 the state is returned unchanged."""
    if queue == 1:
        return state
    return push(state, key, student.encode_value(prob, f16, others), queue)


class EncodeStage(nn.Module):
    """frame B x 3 x H x W → (key, query, f16, skip8, skip4): everything later stages read
    of it (``Student.encode_frame``).

    The skips are the decoder's skip convolutions of f8 and f4, not the trunk features:
    they depend on the frame alone, so K objects share them (at 480x864 on LiteRT's CPU
    interpreter, bench.op_profile timed them at 7.5 and 5.4 ms of a 62.6 ms segment that
    still held them). The trunk's f16 leaves through
    ``layout_anchor``: as it came out of the trunk, onnx2tf 1.29.24 left such outputs NCHW
    while it made key and query NHWC (a clamp, a maximum or a double negation did not
    change that)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, frame: torch.Tensor) -> EncodedFrame:
        enc = self.student.encode_frame(frame)
        return enc._replace(f16=layout_anchor(enc.f16))


def layout_anchor(x: torch.Tensor) -> torch.Tensor:
    """``x`` through a depthwise 1x1 convolution of weight 1: exact (x * 1.0, and 1.0 is
    exact in fp16 too), a few multiplies a pixel, and a convolution's output, which
    onnx2tf lays out NHWC like every other 4-D output."""
    return F.conv2d(x, torch.ones(x.shape[1], 1, 1, 1, dtype=x.dtype, device=x.device),
                    groups=x.shape[1])


class StartStage(nn.Module):
    """(key, f16, mask, others) → (mem_keys, mem_values, mem_valid) of one object: frame 0
    written from its given mask, with the other objects' given masks summed in ``others``."""

    def __init__(self, student: Student, queue: int) -> None:
        super().__init__()
        self.student = student
        self.queue = queue

    def forward(self, key: torch.Tensor, f16: torch.Tensor, mask: torch.Tensor,
                others: torch.Tensor) -> MemoryState:
        return initial_state(key, self.student.encode_value(mask, f16, others), self.queue)


class SegmentStage(nn.Module):
    """(key, query, skip8, skip4, mem_keys, mem_values, mem_valid) → prob B x 1 x H x W."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, key: torch.Tensor, query: torch.Tensor, skip8: torch.Tensor,
                skip4: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor]:
        enc = EncodedFrame(key, query, None, skip8, skip4)  # f16: memorize's, not read here
        prob, _ = read_prob(self.student, enc, MemoryState(keys, values, valid))
        return (prob,)


class MemorizeStage(nn.Module):
    """(key, f16, prob, others, mem_keys, mem_values, mem_valid) → the next state, the
    frame written from one object's aggregated probability and the others' sum."""

    def __init__(self, student: Student, queue: int) -> None:
        super().__init__()
        if queue < 2:
            raise ValueError("at queue 1 the memory never changes: there is nothing to "
                             "memorize")
        self.student = student
        self.queue = queue

    def forward(self, key: torch.Tensor, f16: torch.Tensor, prob: torch.Tensor,
                others: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid: torch.Tensor) -> MemoryState:
        return memorize(self.student, self.queue, MemoryState(keys, values, valid), key, f16,
                        prob, others)


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

    With ``with_readout`` the memory read-out (B x Cv x h*w) and the mask's logit
    (B x 1 x H x W) are returned last, for parity gates that must see more than the mask.
    At Q = 1 the memory never changes, so no value is encoded and the state passes through
    (``pass_through``).
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
        enc = self.student.encode_frame(frame)
        state = MemoryState(keys, values, valid)
        logit, readout = read_logit(self.student, enc, state)
        prob = torch.sigmoid(logit)
        if self.queue > 1:
            state = memorize(self.student, self.queue, state, enc.key, enc.f16, prob)
        else:
            state = MemoryState(*(pass_through(t) for t in state))
        outputs = (prob, *state)
        return (*outputs, flatten_hw(readout), logit) if self.with_readout else outputs
