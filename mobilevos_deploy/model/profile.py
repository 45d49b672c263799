"""Sizes of a student: parameters per part, multiply-accumulates per step, state bytes.

MACs are counted, not estimated: one step is run under ``torch.utils.flop_counter``, which
records every convolution and matrix product per module (FLOPs = 2 x MACs). Element-wise
work (activations, the softmax, |mk|^2) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserError
from ..nn.readout import distinct_size
from .config import StudentConfig, get_variant
from .stages import STRIDE, StepStage, TensorSpec, check_size, state_spec
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
    export_floor_bytes: int  # the least an export at this size needs (memory_floor)

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

    # counted on the meta device: shapes only, nothing of full size is allocated (a
    # 16000x16000 request is counted in a second, not killed for memory)
    step = StepStage(student.to("meta"), queue)
    frame = torch.empty(1, 3, height, width, device="meta")
    state = [torch.empty(t.shape, device="meta") for t in state_spec(cfg, queue, height, width)]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        step(frame, *state)
    counts = counter.get_flop_counts()
    macs = {"total": sum(counts.get("Global", {}).values()) // 2}
    for part in PARTS:
        macs[part] = _part_flops(counts, f"StepStage.student.{part}") // 2

    p, n = affinity_shape(cfg, queue, height, width)
    return Profile(name, height, width, queue, params, macs,
                   state_spec(cfg, queue, height, width), n * p * 4,
                   memory_floor(cfg, queue, height, width))


def _part_flops(counts: dict[str, dict], prefix: str) -> int:
    """The FLOPs counted under module ``prefix``: the outermost modules counted inside it.
    A part whose own forward is not called (the decoder, run as skips, joined and head,
    so that K objects share the skips) has no entry of its own; its children do."""
    keys = [k for k in counts if k == prefix or k.startswith(prefix + ".")]
    outer = [k for k in keys if not any(k != o and k.startswith(o + ".") for o in keys)]
    return sum(sum(counts[k].values()) for k in outer)


def affinity_shape(cfg: StudentConfig, queue: int, height: int, width: int) -> tuple[int, int]:
    """(P, N): query positions x memory positions of one step's affinity, as the read-out
    pads them."""
    hw = (height // STRIDE) * (width // STRIDE)
    taken = {cfg.key_dim, cfg.key_dim + 1, cfg.value_dim}
    n = distinct_size(queue * hw, taken)
    return distinct_size(hw, taken | {n}), n


def memory_floor(cfg: StudentConfig, queue: int, height: int, width: int,
                 itemsize: int = 8) -> int:
    """Bytes an export at this size needs at the least: the float64 reference step's
    affinity and its softmax (two P x N arrays), and one stride-2 activation of the key
    encoder's stem in and out (16 values per pixel: 64 channels at half resolution in
    ResNet, 96 expanded channels in MobileNetV2's second block). A lower bound: the
    converter and runtimes need more, so a request above it cannot fit."""
    p, n = affinity_shape(cfg, queue, height, width)
    return itemsize * (2 * p * n + 2 * 16 * height * width)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(cfg: StudentConfig, queue: int, height: int, width: int, what: str,
                 itemsize: int = 8) -> None:
    """A UserError before anything is built when ``what`` cannot fit in this machine."""
    need, have = memory_floor(cfg, queue, height, width, itemsize), available_memory()
    if have is not None and need > have:
        p, n = affinity_shape(cfg, queue, height, width)
        raise UserError(f"{what} at {height}x{width}, queue {queue} needs at least "
                        f"{need / 2**30:,.1f} GiB (the affinity alone is {p:,} x {n:,}); "
                        f"this machine has {have / 2**30:.1f} GiB available. Choose a smaller "
                        "--size or --queue.")


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
    lines.append(f"  export needs    at least {p.export_floor_bytes / 2**30:,.2f} GiB "
                 "(float64 reference affinity + softmax, a stem activation)")
    return "\n".join(lines)
