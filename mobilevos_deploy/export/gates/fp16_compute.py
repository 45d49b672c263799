"""The fp16-compute gate: the student with every weight and activation in half precision.

A phone GPU runs with precision loss allowed (``benchmark_model``'s default, and what apps
ship): every tensor, the memory read-out's affinity and softmax included, is fp16. The fp16
TFLite files only round the weights (XNNPACK and ``GpuOptions(enforce_f32=True)`` compute
in fp32), so they cannot show what half-precision arithmetic does to the network.

Here a copy of the student has its weights rounded to fp16, its inputs are rounded, and
every op's result is rounded to fp16 as it is produced (``HalfStorage``, a torch function
mode): fp16 storage of every tensor with each op computed in fp32 between roundings, which
is how most mobile GPU backends run fp16 (fp16 storage, wider accumulation inside an op),
and overflow past 65504 gives inf as on the phone. A GPU that also accumulates in fp16 is
worse, which is why the GPU backend itself is run in fp16 wherever the device computes in
fp16 (``gates.gpu._fp16_rollout``).

Why not the student cast to ``torch.float16``, as this gate first did: PyTorch's CPU fp16
kernels are slow (44 s against 6.2 s here for 7 steps of the stage-3 student at 480x864),
and the fp16 gates now run three times as many steps (``parity.fp16_gate``). On those
7 steps the two simulations differ from each other by at most 0.027 in probability, as
each does from fp32 (0.023 and 0.025): two roundings of the same arithmetic, neither
closer to a phone than the other.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ...model.graphs import GraphSpec, graph_module
from ...model.student import Student
from ...runtime.runners import Runner


def to_half(x):
    """``x`` (a tensor, or a tuple of them) with every fp32 tensor rounded to fp16 values."""
    if isinstance(x, torch.Tensor):
        return x.half().float() if x.dtype == torch.float32 else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # named tuples (torch.max, ...)
        return type(x)(*(to_half(v) for v in x))
    if isinstance(x, tuple | list):
        return type(x)(to_half(v) for v in x)
    return x


# Ops whose result, given fp16 values, is already an fp16 value: rounding it again is the
# identity, so it is skipped (views and copies of values, clamps to representable bounds)
_EXACT = frozenset({"relu", "relu_", "hardtanh", "hardtanh_", "relu6", "cat", "reshape", "view",
                    "transpose", "permute", "flatten", "__getitem__", "contiguous", "dim",
                    "size", "__get__", "zeros_like", "ones_like"})


def _round_result(out, args):
    """``to_half`` of an op's result; a fresh fp32 tensor is rounded in place (one pass
    over memory, no new allocation), the same values as ``to_half``."""
    if not isinstance(out, torch.Tensor):
        return to_half(out)
    if out.dtype != torch.float32:
        return out
    if out._is_view() or any(out is a for a in args):
        return out.half().float()
    return out.copy_(out.half())


class HalfStorage(TorchFunctionMode):
    """Rounds the result of every torch op to fp16 (the mode is off inside its handler)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in _EXACT:
            return out
        return _round_result(out, args)


def half_student(student: Student, prefix: str = "") -> Student:
    """A copy of ``student`` with every weight and buffer (those whose names start with
    ``prefix``) rounded to fp16 values."""
    half = copy.deepcopy(student).eval()
    with torch.no_grad():
        for name, t in [*half.named_parameters(), *half.named_buffers()]:
            if t.dtype == torch.float32 and name.startswith(prefix):
                t.copy_(t.half().float())
    return half


def half_runner(module: nn.Module, spec: GraphSpec) -> Runner:
    """Like ``runners.torch_runner`` (a channels-last copy, ~1.5x as fast on CPU), every
    input and every op's result rounded to fp16. The layout changes only the order of an
    op's fp32 sums, as any two fp16 backends differ, not where values are rounded."""
    fast = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def arg(x: np.ndarray) -> torch.Tensor:
        t = to_half(torch.from_numpy(x))
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad(), HalfStorage():
            outs = fast(*(arg(inputs[n]) for n in spec.input_names))
        return {n: o.contiguous().numpy() for n, o in zip(spec.output_names, outs, strict=True)}

    return run


def half_runners(student: Student, queue: int, specs: dict[str, GraphSpec]
                 ) -> dict[str, Runner]:
    half = half_student(student)
    return {name: half_runner(graph_module(half, queue, name), specs[name])
            for name in ("init", "step", "probe")}
