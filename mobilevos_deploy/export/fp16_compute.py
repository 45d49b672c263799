"""The fp16-compute gate: the student with every activation in half precision.

A phone GPU runs with precision loss allowed (``benchmark_model``'s default, and what apps
ship): every tensor, the memory read-out's affinity and softmax included, is fp16. The fp16
TFLite files only round the weights (XNNPACK and ``GpuOptions(enforce_f32=True)`` compute
in fp32), so they cannot show what half-precision arithmetic does to the network.

Here PyTorch runs a copy of the student in fp16: weights, inputs, every activation and the
read-out (``MemoryReadout.compute_dtype``), channels-last. PyTorch's CPU kernels round each
op's output to fp16 and may accumulate inside an op in fp32, which is how most mobile GPU
backends run fp16 convolutions (fp16 storage, wider accumulation); a GPU that also
accumulates in fp16 is worse, which is why the GPU backend itself is run in fp16 wherever
the device computes in fp16 (``api._gpu_fp16_rollout``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..model.student import Student
from ..nn.readout import MemoryReadout
from .graphs import GraphSpec, graph_module
from .runtimes import Runner


def half_student(student: Student) -> Student:
    """A copy of ``student`` whose weights, activations and read-out are fp16."""
    half = copy.deepcopy(student).half().eval()
    for module in half.modules():
        if isinstance(module, MemoryReadout):
            module.compute_dtype = torch.float16
    return half


def half_runner(module: nn.Module, spec: GraphSpec) -> Runner:
    """Like ``runtimes.torch_runner`` for an fp16 module: fp32 numpy in, fp16 inside,
    fp32 numpy out (the state fed back between steps stays fp16-exact)."""
    fast = module.to(memory_format=torch.channels_last)

    def arg(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).half()
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = fast(*(arg(inputs[n]) for n in spec.input_names))
        return {n: o.float().contiguous().numpy()
                for n, o in zip(spec.output_names, outs, strict=True)}

    return run


def half_runners(student: Student, queue: int, specs: dict[str, GraphSpec]
                 ) -> dict[str, Runner]:
    half = half_student(student)
    return {name: half_runner(graph_module(half, queue, name), specs[name])
            for name in ("init", "step", "probe")}
