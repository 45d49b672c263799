"""Sizes of a student: parameters per part, multiply-accumulates per step, state bytes.

MACs are counted, not estimated: one step is run under ``torch.utils.flop_counter``, which
records every convolution and matrix product per module (FLOPs = 2 x MACs). Element-wise
work (activations, the softmax, |mk|^2) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import get_variant
from .nn.readout import distinct_size
from .stages import STRIDE, InitStage, StepStage, TensorSpec, check_size, state_spec
from .student import build_student

PARTS = ("key_encoder", "value_encoder", "readout", "decoder")


@dataclass(frozen=True)
class Profile:
    variant: str
    height: int
    width: int
    queue: int
    params: dict[str, int]  # "total", each part, and "aspp" (inside the decoder)
    macs: dict[str, int]  # per step: "total" and each part
    state: list[TensorSpec]
    affinity_bytes: int  # fp32 P x N affinity of one step (N ~ Q*h*w, P ~ h*w)

    @property
    def state_bytes(self) -> int:
        return sum(s.nbytes for s in self.state)


def profile_variant(name: str, height: int, width: int, queue: int) -> Profile:
    check_size(height, width)
    cfg = get_variant(name).config
    student = build_student(cfg)
    params = {"total": sum(p.numel() for p in student.parameters())}
    for part in PARTS:
        params[part] = sum(p.numel() for p in getattr(student, part).parameters())
    params["aspp"] = sum(p.numel() for p in student.decoder.aspp.parameters())

    frame = torch.rand(1, 3, height, width)
    mask = (torch.rand(1, 1, height, width) > 0.5).float()
    step = StepStage(student, queue)
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        state = InitStage(student, queue)(frame, mask)
        with counter:
            step(frame, *state)
    counts = counter.get_flop_counts()
    macs = {"total": sum(counts.get("Global", {}).values()) // 2}
    for part in PARTS:
        macs[part] = sum(counts.get(f"StepStage.student.{part}", {}).values()) // 2

    hw = (height // STRIDE) * (width // STRIDE)
    taken = {cfg.key_dim, cfg.key_dim + 1, cfg.value_dim}  # as padded by the read-out
    n = distinct_size(queue * hw, taken)
    p = distinct_size(hw, taken | {n})
    return Profile(name, height, width, queue, params, macs,
                   state_spec(cfg, queue, height, width), n * p * 4)


def format_profile(p: Profile) -> str:
    m = 1e6
    lines = [
        f"{p.variant}  ({get_variant(p.variant).description})",
        f"  parameters      {p.params['total'] / m:7.3f} M  (paper "
        f"{get_variant(p.variant).paper_params} M)",
    ]
    for part in (*PARTS, "aspp"):
        lines.append(f"    {part:<14}{p.params[part] / m:7.3f} M")
    lines.append(f"  MACs per step at {p.height}x{p.width}, queue {p.queue}: "
                 f"{p.macs['total'] / 1e9:.3f} G")
    enc = p.macs["key_encoder"] + p.macs["value_encoder"]
    lines.append(f"    encoders      {enc / 1e9:7.3f} G  (key {p.macs['key_encoder'] / 1e9:.3f}, "
                 f"value {p.macs['value_encoder'] / 1e9:.3f})")
    lines.append(f"    readout       {p.macs['readout'] / 1e9:7.3f} G")
    lines.append(f"    decoder       {p.macs['decoder'] / 1e9:7.3f} G")
    lines.append(f"  state tensors ({p.state_bytes / 2**20:.2f} MiB fp32):")
    for s in p.state:
        lines.append(f"    {s.name:<12}{'x'.join(map(str, s.shape)):<18}{s.layout:<14}"
                     f"{s.nbytes:>12,} B")
    lines.append(f"  affinity        {p.affinity_bytes:,} B fp32 "
                 f"({p.affinity_bytes / 2**20:.2f} MiB)")
    return "\n".join(lines)
