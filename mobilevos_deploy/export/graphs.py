"""The graphs an export ships, their declared I/O, and the ONNX export of each.

Layouts are declared, never guessed: the ONNX graphs are NCHW; onnx2tf turns 4-D inputs
and outputs (frame, mask, prob) into NHWC, and keeps the 3-D state as it is when the state
inputs are named with ``-kat``. Parity checks then prove every declared layout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxsim
import torch
from torch import nn

from ..model.config import StudentConfig
from ..model.stages import (
    STRIDE,
    EncodeStage,
    InitStage,
    MemorizeStage,
    SegmentStage,
    StartStage,
    StepStage,
    TensorSpec,
    check_size,
    state_spec,
)
from ..model.student import Student, trunk_channels

OPSET = 17
NEXT = "next_"  # prefix of the step outputs that feed back as the state inputs
# Bumped whenever the exported graphs change for the same student (recorded in the
# manifest; an older export is not reused). 2: P x N affinity with one fused softmax.
# 3: the key-norm term of the read-out scaled before it is squared (fp16 headroom); at
# queue 1 the pass-through state is a tensor of its own (stages.pass_through). 4: the
# K-object graphs (encode, start, segment, memorize) beside an unchanged init and step.
GRAPH_REVISION = 4


SINGLE_GRAPHS = ("init", "step")  # one object: the paper's benchmark pair


def multi_graphs(queue: int) -> tuple[str, ...]:
    """The graphs of the K-object loop (stages.py); at queue 1 nothing is memorized."""
    return ("encode", "start", "segment", *(("memorize",) if queue > 1 else ()))


@dataclass(frozen=True)
class GraphSpec:
    name: str  # "init" | "step" | "probe" (the step, its read-out and logit: gates only)
    inputs: tuple[TensorSpec, ...]  # ONNX (PyTorch) shapes and layouts
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def graph_specs(student: Student, queue: int, height: int, width: int) -> dict[str, GraphSpec]:
    return config_specs(student.config, queue, height, width)


def config_specs(cfg: StudentConfig, queue: int, height: int,
                 width: int) -> dict[str, GraphSpec]:
    """The graphs' declared I/O, from the config alone (a manifest is checked with it)."""
    check_size(height, width)
    state = tuple(state_spec(cfg, queue, height, width))
    nxt = tuple(TensorSpec(NEXT + s.name, s.shape, s.dtype, s.layout) for s in state)
    frame = TensorSpec("frame", (1, 3, height, width), "float32", "NCHW RGB [0,1]")
    mask = TensorSpec("mask", (1, 1, height, width), "float32", "NCHW [0,1]")
    prob = TensorSpec("prob", (1, 1, height, width), "float32", "NCHW [0,1]")
    hw = (height // 16) * (width // 16)
    readout = TensorSpec("readout", (1, cfg.value_dim, hw), "float32", "B,Cv,h*w")
    logit = TensorSpec("logit", (1, 1, height, width), "float32", "NCHW")
    h, w = height // STRIDE, width // STRIDE
    c16 = trunk_channels(cfg.key_backbone)[2]

    def nchw(name: str, channels: int, scale: int = 1) -> TensorSpec:
        return TensorSpec(name, (1, channels, scale * h, scale * w), "float32", "NCHW")

    key, query, f16 = nchw("key", cfg.key_dim), nchw("query", cfg.query_dim), nchw("f16", c16)
    d16, d8, _ = cfg.decoder_dims  # the decoder's skip convolutions (EncodedFrame)
    skip8, skip4 = nchw("skip8", d16, 2), nchw("skip4", d8, 4)
    others = TensorSpec("others", (1, 1, height, width), "float32", "NCHW [0,1]")
    specs = {
        "init": GraphSpec("init", (frame, mask), state),
        "step": GraphSpec("step", (frame, *state), (prob, *nxt)),
        "probe": GraphSpec("probe", (frame, *state), (prob, *nxt, readout, logit)),
        "encode": GraphSpec("encode", (frame,), (key, query, f16, skip8, skip4)),
        "start": GraphSpec("start", (key, f16, mask, others), state),
        "segment": GraphSpec("segment", (key, query, skip8, skip4, *state), (prob,)),
    }
    if queue > 1:
        specs["memorize"] = GraphSpec("memorize", (key, f16, prob, others, *state), nxt)
    return specs


def graph_module(student: Student, queue: int, name: str) -> nn.Module:
    if name == "init":
        return InitStage(student, queue).eval()
    if name in ("step", "probe"):
        return StepStage(student, queue, with_readout=name == "probe").eval()
    return {"encode": lambda: EncodeStage(student), "start": lambda: StartStage(student, queue),
            "segment": lambda: SegmentStage(student),
            "memorize": lambda: MemorizeStage(student, queue)}[name]().eval()


def export_onnx(module: nn.Module, spec: GraphSpec, path: Path) -> None:
    """Trace ``module`` on zeros of the declared shapes; TracerWarning is an error here."""
    args = tuple(torch.zeros(t.shape) for t in spec.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module, args, str(path), input_names=spec.input_names,
            output_names=spec.output_names, opset_version=OPSET, dynamo=False,
            do_constant_folding=True,
        )
    # fold the shape arithmetic of the trace into constants: every size is static here
    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise RuntimeError(f"onnxsim could not validate the simplified {spec.name} graph")
    onnx.checker.check_model(model, full_check=True)
    left = sorted({n.op_type for n in model.graph.node} & {"Shape", "Gather", "Expand"})
    if left:
        raise RuntimeError(f"{spec.name} graph still has dynamic-shape ops {left}")
    onnx.save(model, str(path))
