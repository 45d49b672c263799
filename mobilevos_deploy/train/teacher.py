"""The infinite-memory teacher: an STCN-style space-time-memory network.

Differences from the students, as in STCN: a larger key encoder (ResNet34 up to stride
16 here, STCN has a ResNet50; wider projections and decoder), a value encoder that sees
the frame as well as the mask, and a memory that is never trimmed: the first frame,
then every ``mem_every``-th frame, kept for the whole clip. It runs only in training
(never exported), so its memory is a growing list of tensors concatenated per frame.

Interface: :meth:`Teacher.clip` returns, for frames 1..T-1, the representation before
the final conv (B x D x H/4 x W/4) and the mask logits (B x 1 x H x W).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import atomic_path
from ..model.checkpoint import read_checkpoint_file
from ..model.config import StudentConfig
from ..model.objects import memory_inputs_batched
from ..model.student import Decoder, KeyEncoder, KeyFeatures, ValueEncoder, init_weights
from ..nn.readout import MemoryReadout
from .teacher_protocol import TeacherFrame, TeacherMemory, run_clip

if TYPE_CHECKING:
    from .stcn import STCNTeacher

KIND = "mobilevos-teacher"


@dataclass(frozen=True)
class TeacherConfig:
    key_backbone: str = "resnet34"  # larger than every student's key encoder
    key_dim: int = 64
    value_dim: int = 256
    query_dim: int = 256
    decoder_dims: tuple[int, int, int] = (256, 128, 64)
    aspp: bool = False

    def parts(self) -> StudentConfig:
        """The same channel choices in the students' config type (the parts are shared);
        the value encoder reads frame (3) + object mask + other objects."""
        return StudentConfig(key_backbone=self.key_backbone, key_dim=self.key_dim,
                             value_dim=self.value_dim, query_dim=self.query_dim,
                             decoder_dims=self.decoder_dims, aspp=self.aspp,
                             value_in_channels=5)

    @property
    def feature_dim(self) -> int:
        return self.decoder_dims[2]


DEFAULT_TEACHER = TeacherConfig()


class Teacher(nn.Module):
    def __init__(self, cfg: TeacherConfig = DEFAULT_TEACHER, mem_every: int = 5) -> None:
        super().__init__()
        if mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {mem_every}")
        self.config = cfg
        self.mem_every = mem_every
        parts = cfg.parts()
        self.key_encoder = KeyEncoder(parts)
        c4, c8, c16 = self.key_encoder.trunk.channels
        self.value_encoder = ValueEncoder(parts, c16)
        self.readout = MemoryReadout(cfg.key_dim)
        self.decoder = Decoder(parts, (c4, c8))

    @property
    def feature_dim(self) -> int:
        """Channels of :attr:`TeacherFrame.features`."""
        return self.config.feature_dim

    def encode_value(self, frame: torch.Tensor, prob: torch.Tensor, key_f16: torch.Tensor,
                     others: torch.Tensor | None = None) -> torch.Tensor:
        # frame: B x 3 x H x W, prob and others (the other objects' sum; None: zero):
        # B x 1 x H x W → B x Cv x h x w
        if others is None:
            others = torch.zeros_like(prob)
        return self.value_encoder(torch.cat([frame, prob, others], dim=1), key_f16)

    def start(self, frame: torch.Tensor, mask: torch.Tensor,
              others: torch.Tensor | None = None) -> TeacherMemory:
        """Frame 0 and its given mask (B x 1 x H x W; ``others``: the other objects'
        masks summed) → the memory."""
        enc = self.key_encoder(frame)
        return TeacherMemory(enc.key.flatten(2),
                             self.encode_value(frame, mask, enc.f16, others).flatten(2), 0)

    def read(self, frame: torch.Tensor, memory: TeacherMemory
             ) -> tuple[TeacherFrame, KeyFeatures]:
        """The next frame against the whole memory (which is not changed)."""
        enc = self.key_encoder(frame)
        keys, values = memory.keys, memory.values
        readout = self.readout(keys, values, torch.ones_like(keys[:, :1]), enc.key)
        features = self.decoder.features(readout, enc.query, enc.f8, enc.f4)
        return TeacherFrame(features, self.decoder.head(features)), enc

    def write(self, frame: torch.Tensor, enc: KeyFeatures, memory: TeacherMemory,
              prob: torch.Tensor, others: torch.Tensor | None = None) -> TeacherMemory:
        """The frame read last (``enc``) after ``memory``: added to it if it is a
        ``mem_every``-th frame, written from ``prob`` and the other objects' ``others``."""
        t = memory.frame + 1
        if t % self.mem_every:
            return memory._replace(frame=t)
        value = self.encode_value(frame, prob, enc.f16, others)
        return TeacherMemory(torch.cat([memory.keys, enc.key.flatten(2)], dim=2),
                             torch.cat([memory.values, value.flatten(2)], dim=2), t)

    def step(self, frame: torch.Tensor, memory: TeacherMemory,
             remember: bool = True) -> tuple[TeacherFrame, TeacherMemory]:
        """The next frame against the whole memory; every ``mem_every``-th frame is added
        to it (``remember=False`` skips that, for the last frame of a clip)."""
        out, enc = self.read(frame, memory)
        if not remember:
            return out, memory._replace(frame=memory.frame + 1)
        return out, self.write(frame, enc, memory, torch.sigmoid(out.logits))

    def clip(self, frames: torch.Tensor, first_mask: torch.Tensor,
             present: torch.Tensor | None = None) -> list[TeacherFrame]:
        if present is not None:
            return run_clip_objects(self, frames, first_mask, present)
        return run_clip(self, frames, first_mask)


def run_clip_objects(teacher: Teacher, frames: torch.Tensor, first: torch.Tensor,
                     present: torch.Tensor) -> list[TeacherFrame]:
    """:func:`run_clip` for up to K objects of each clip, the STCN way (as the student
    trains: loop.student_clip_objects). first: B x K x H x W, present: B x K bool → T-1
    outputs of BK rows (clip-major, then object). Each object reads its own copy of the
    frame's encoding (the teacher only trains and distils; it is never exported)."""
    b, k = first.shape[:2]

    def per_object(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(k, dim=0)

    masks = first[:, :, None] * present[:, :, None, None, None]
    others = masks.sum(dim=1, keepdim=True) - masks
    memory = teacher.start(per_object(frames[:, 0]), masks.flatten(0, 1), others.flatten(0, 1))
    out = []
    for t in range(1, frames.shape[1]):
        frame = per_object(frames[:, t])
        frame_out, enc = teacher.read(frame, memory)
        out.append(frame_out)
        if t < frames.shape[1] - 1:
            probs = torch.sigmoid(frame_out.logits).unflatten(0, (b, k))
            written, others = memory_inputs_batched(probs, present)
            memory = teacher.write(frame, enc, memory, written.flatten(0, 1),
                                   others.flatten(0, 1))
    return out


def build_teacher(cfg: TeacherConfig = DEFAULT_TEACHER, seed: int = 0,
                  mem_every: int = 5) -> Teacher:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        teacher = Teacher(cfg, mem_every)
        init_weights(teacher)
    return teacher.eval()


def save_teacher(path: str | Path, teacher: Teacher) -> Path:
    path = Path(path)
    payload = {"kind": KIND, "config": dataclasses.asdict(teacher.config),
               "state_dict": {k: v.detach().cpu().clone()
                              for k, v in teacher.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_teacher(path: str | Path, mem_every: int = 5) -> Teacher | STCNTeacher:
    """A teacher written by :func:`save_teacher` (``mvos-train --model teacher``), or the
    released STCN checkpoint (a plain state_dict of its evaluation network)."""
    from .stcn import is_stcn_state, load_stcn

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}; train one with "
                              "`mvos-train --model teacher`, give STCN's released stcn.pth, "
                              "or use --loss ce (no teacher)")
    obj = read_checkpoint_file(path)
    if is_stcn_state(obj):
        return load_stcn(path, obj, mem_every)
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise CheckpointError(
            f"{path} is neither a teacher checkpoint (no kind {KIND!r}) nor STCN's released "
            "network (no key_proj / value_encoder.fuser tensors); train one with "
            "`mvos-train --model teacher`, or leave out --teacher for cross-entropy only.")
    try:
        cfg = TeacherConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in obj["config"].items()})
        teacher = Teacher(cfg, mem_every)
        teacher.load_state_dict(obj["state_dict"], strict=True)
    except (TypeError, KeyError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the teacher does not load ({str(exc)[:300]})") from None
    return teacher.eval()


def teacher_kind(teacher: nn.Module) -> str:
    """'stcn' for the released STCN, 'mobilevos-teacher' for ours."""
    return getattr(teacher, "kind", KIND)
