"""The streaming reference tracker: the semantics every exported model must reproduce."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..model.memory import MemoryState
from ..model.objects import first_inputs, memory_inputs
from ..model.stages import STRIDE, InitStage, StartStage, StepStage, check_size, memorize, read_prob
from ..model.student import Student


class Tracker:
    """Single-object streaming segmentation with a queue of ``queue`` memory slots.

    ``init(frame, mask)`` and ``step(frame, state)`` take B x 3 x H x W frames in [0, 1]
    with H and W multiples of 16 (``track`` pads other sizes) and B x 1 x H x W masks.
    """

    def __init__(self, student: Student, queue: int) -> None:
        if queue < 1:
            raise UserError(f"queue length must be >= 1, got {queue}")
        self.queue = queue
        self.init_stage = InitStage(student, queue).eval()
        self.step_stage = StepStage(student, queue).eval()

    @torch.inference_mode()
    def init(self, frame: torch.Tensor, mask: torch.Tensor) -> MemoryState:
        check_size(*frame.shape[-2:])
        return MemoryState(*self.init_stage(frame, mask))

    @torch.inference_mode()
    def step(self, frame: torch.Tensor, state: MemoryState) -> tuple[torch.Tensor, MemoryState]:
        check_size(*frame.shape[-2:])
        prob, *next_state = self.step_stage(frame, *state)
        return prob, MemoryState(*next_state)


def pad_amounts(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding up to multiples of 16, split evenly."""
    ph, pw = -height % STRIDE, -width % STRIDE
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


@dataclass(frozen=True)
class TrackResult:
    probs: torch.Tensor  # T x H x W object probabilities; entry 0 is the given mask
    step_ms: list[float]  # wall time of each step (frames 1..T-1), milliseconds


def track_timed(
    student: Student, frames: torch.Tensor, first_mask: torch.Tensor, queue: int
) -> TrackResult:
    """Segment a clip. frames: T x 3 x H x W in [0, 1]; first_mask: H x W in [0, 1].

    Any H and W: frames are zero-padded to multiples of 16 and the masks cropped back.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise UserError(f"frames must be T x 3 x H x W, got {tuple(frames.shape)}")
    if first_mask.shape != frames.shape[-2:]:
        raise UserError(
            f"first mask is {tuple(first_mask.shape)} but frames are {tuple(frames.shape[-2:])}"
        )
    pads = pad_amounts(*frames.shape[-2:])
    left, right, top, bottom = pads
    padded = F.pad(frames, pads)
    mask = F.pad(first_mask[None, None].to(frames.dtype), pads)
    tracker = Tracker(student, queue)
    state = tracker.init(padded[:1], mask)
    probs, step_ms = [mask[0, 0]], []
    for t in range(1, frames.shape[0]):
        start = time.perf_counter()
        prob, state = tracker.step(padded[t : t + 1], state)
        step_ms.append((time.perf_counter() - start) * 1e3)
        probs.append(prob[0, 0])
    out = torch.stack(probs)
    return TrackResult(out[:, top : out.shape[1] - bottom, left : out.shape[2] - right], step_ms)


def track(
    student: Student, frames: torch.Tensor, first_mask: torch.Tensor, queue: int
) -> torch.Tensor:
    """T x H x W probabilities of :func:`track_timed`."""
    return track_timed(student, frames, first_mask, queue).probs


@torch.inference_mode()
def track_objects(student: Student, frames: torch.Tensor, first_masks: torch.Tensor,
                  queue: int) -> torch.Tensor:
    """Several objects the STCN way (mobilevos_deploy.model.objects), at a size that is a
    multiple of 16. frames: T x 3 x H x W in [0, 1]; first_masks: K x H x W, one binary
    mask per object → K x T x H x W probabilities (entry 0: the given masks). Each
    object's own prediction is returned; its memory is written from the aggregated one."""
    if frames.ndim != 4 or first_masks.ndim != 3 or first_masks.shape[1:] != frames.shape[2:]:
        raise UserError(f"frames T x 3 x H x W and masks K x H x W of the same H x W, got "
                        f"{tuple(frames.shape)} and {tuple(first_masks.shape)}")
    check_size(*frames.shape[-2:])
    masks = first_masks[:, None, None].to(frames.dtype)  # K x 1 x 1 x H x W
    enc = student.key_encoder(frames[:1])
    start = StartStage(student, queue)
    given, others = first_inputs(masks)
    states = [MemoryState(*start(enc.key, enc.f16, m, o)) for m, o in zip(given, others,
                                                                            strict=True)]
    out = [masks[:, 0, 0]]
    for t in range(1, frames.shape[0]):
        enc = student.encode_frame(frames[t : t + 1])
        probs = torch.stack([read_prob(student, enc, s)[0] for s in states])
        written, others = memory_inputs(probs)
        states = [memorize(student, queue, s, enc.key, enc.f16, w, o)
                  for s, w, o in zip(states, written, others, strict=True)]
        out.append(probs[:, 0, 0])
    return torch.stack(out, dim=1)
