"""Validation J&F: run a network over held-out DAVIS-layout sequences with mvos-run's
runner and score the masks with mvos-eval's :func:`evaluate`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..inference.backends import TorchBackend
from ..inference.runner import run_video
from ..metrics.evaluate import evaluate
from ..model.objects import first_inputs, memory_inputs
from ..model.stages import check_size
from ..model.student import Student
from .data import davis_level
from .teacher import Teacher, TeacherMemory


@dataclass(frozen=True)
class Score:
    jf: float
    j: float
    f: float
    sequences: int


@dataclass
class TeacherBackend:
    """The teacher behind mvos-run's backend interface (one object per state, memory
    unbounded), so it is scored exactly as the students are."""

    teacher: Teacher
    height: int
    width: int
    name: str = "teacher"
    precision: str = "fp32"
    device: str = "cpu"
    queue: int = 0  # 0: unbounded

    def __post_init__(self) -> None:
        check_size(self.height, self.width)

    @torch.inference_mode()
    def init(self, frame: np.ndarray, masks: list[np.ndarray]) -> list[TeacherMemory]:
        given, others = first_inputs(torch.stack([torch.from_numpy(m) for m in masks]))
        return [self.teacher.start(torch.from_numpy(frame), m, o)
                for m, o in zip(given, others, strict=True)]

    @torch.inference_mode()
    def step(self, frame: np.ndarray, states: list[TeacherMemory]
             ) -> tuple[list[np.ndarray], list[TeacherMemory]]:
        image = torch.from_numpy(frame)
        reads = [self.teacher.read(image, memory) for memory in states]
        probs = torch.stack([torch.sigmoid(out.logits) for out, _ in reads])
        written, others = memory_inputs(probs)
        nxt = [self.teacher.write(image, enc, memory, w, o) for (_, enc), memory, w, o
               in zip(reads, states, written, others, strict=True)]
        return [p[0, 0].numpy() for p in probs], nxt


def check_val_root(root: Path) -> None:
    """A UserError unless ``root`` holds DAVIS-layout sequences with first masks."""
    root = Path(root)
    images, annotations = davis_level(root, "JPEGImages"), davis_level(root, "Annotations")
    if not images.is_dir() or not annotations.is_dir():
        raise UserError(f"{root}: validation clips need JPEGImages/ and Annotations/ "
                        "(DAVIS layout; mvos-synth writes one)")
    if not any(any((annotations / d.name).glob("*.png")) for d in images.iterdir()
               if d.is_dir()):
        raise UserError(f"{root}: no sequence has an annotated first frame")


def validate(network: Student | Teacher, root: Path, size: tuple[int, int],
             queue: int = 2, sequences: list[str] | None = None) -> Score:
    """J&F mean over every sequence of ``root`` (DAVIS layout), or those named in
    ``sequences``, first mask given."""
    root = Path(root)
    images, annotations = davis_level(root, "JPEGImages"), davis_level(root, "Annotations")
    was_training = network.training
    network.eval()
    if isinstance(network, Teacher):
        backend = TeacherBackend(network, *size)
    else:
        backend = TorchBackend(network, queue, *size)
    try:
        with tempfile.TemporaryDirectory(prefix="mvos-val-") as tmp:
            names = []
            for seq in sorted(d for d in images.iterdir() if d.is_dir()
                              and (sequences is None or d.name in sequences)):
                first = sorted((annotations / seq.name).glob("*.png"))
                if first:
                    run_video(backend, seq, first[0], Path(tmp) / seq.name)
                    names.append(seq.name)
            result = evaluate(Path(tmp), annotations, names)
    finally:
        network.train(was_training)
    g = result.global_row()
    return Score(g["J&F-Mean"], g["J-Mean"], g["F-Mean"], len(names))
