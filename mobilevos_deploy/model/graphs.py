"""The graph registry: every graph an export can build, with its module, its declared I/O
and its name in one entry. Whatever lists graphs (the export, its gates, the manifest's
verification, mvos-run's backends, mvos-bench) asks this module.

Layouts are declared, never guessed: the graphs are NCHW as PyTorch runs them; onnx2tf
turns 4-D inputs and outputs (frame, mask, prob) into NHWC, and keeps the 3-D state as it
is. Parity checks then prove every declared layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .config import StudentConfig
from .stages import (
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
from .student import Student, trunk_channels

NEXT = "next_"  # prefix of the outputs that feed back as the state inputs
# Bumped whenever the exported graphs change for the same student (recorded in the
# manifest; an older export is not reused). 2: P x N affinity with one fused softmax.
# 3: the key-norm term of the read-out scaled before it is squared (fp16 headroom); at
# queue 1 the pass-through state is a tensor of its own (stages.pass_through). 4: the
# K-object graphs (encode, start, segment, memorize) beside an unchanged init and step.
# 5: the shipped graphs as signatures of one TFLite model per precision (tflite_file).
GRAPH_REVISION = 5


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]  # PyTorch (and ONNX) shapes and layouts
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class Tensors:
    """The tensors the graphs' I/O is made of, for one (config, queue, size)."""

    frame: TensorSpec
    mask: TensorSpec
    others: TensorSpec
    prob: TensorSpec
    logit: TensorSpec
    readout: TensorSpec
    key: TensorSpec
    query: TensorSpec
    f16: TensorSpec
    skip8: TensorSpec
    skip4: TensorSpec
    state: tuple[TensorSpec, ...]
    next_state: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, cfg: StudentConfig, queue: int, height: int, width: int) -> Tensors:
        check_size(height, width)
        state = tuple(state_spec(cfg, queue, height, width))
        h, w = height // STRIDE, width // STRIDE

        def image(name: str, channels: int, layout: str) -> TensorSpec:
            return TensorSpec(name, (1, channels, height, width), "float32", layout)

        def feature(name: str, channels: int, scale: int = 1) -> TensorSpec:
            return TensorSpec(name, (1, channels, scale * h, scale * w), "float32", "NCHW")

        d16, d8, _ = cfg.decoder_dims  # the decoder's skip convolutions (EncodedFrame)
        return cls(
            frame=image("frame", 3, "NCHW RGB [0,1]"),
            mask=image("mask", 1, "NCHW [0,1]"),
            others=image("others", 1, "NCHW [0,1]"),
            prob=image("prob", 1, "NCHW [0,1]"),
            logit=image("logit", 1, "NCHW"),
            readout=TensorSpec("readout", (1, cfg.value_dim, h * w), "float32", "B,Cv,h*w"),
            key=feature("key", cfg.key_dim),
            query=feature("query", cfg.query_dim),
            f16=feature("f16", trunk_channels(cfg.key_backbone)[2]),
            skip8=feature("skip8", d16, 2),
            skip4=feature("skip4", d8, 4),
            state=state,
            next_state=tuple(TensorSpec(NEXT + s.name, s.shape, s.dtype, s.layout)
                             for s in state),
        )


IO = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]


@dataclass(frozen=True)
class Graph:
    """One deployable graph: its name, its module, its I/O."""

    name: str
    build: Callable[[Student, int], nn.Module]  # (student, queue) → the stage module
    io: Callable[[Tensors], IO]  # (inputs, outputs)
    # "single": the one-object pair (the paper's benchmark graphs); "objects": the K-object
    # loop (runtime/loop.py); "gate": built for the export's gates only, never shipped
    role: str
    min_queue: int = 1  # memorize: at queue 1 the memory is the first frame for good

    def spec(self, tensors: Tensors) -> GraphSpec:
        inputs, outputs = self.io(tensors)
        return GraphSpec(self.name, inputs, outputs)


GRAPHS: dict[str, Graph] = {g.name: g for g in (
    Graph("init", InitStage, lambda t: ((t.frame, t.mask), t.state), "single"),
    Graph("step", StepStage, lambda t: ((t.frame, *t.state), (t.prob, *t.next_state)),
          "single"),
    Graph("encode", lambda s, q: EncodeStage(s),
          lambda t: ((t.frame,), (t.key, t.query, t.f16, t.skip8, t.skip4)), "objects"),
    Graph("start", StartStage, lambda t: ((t.key, t.f16, t.mask, t.others), t.state),
          "objects"),
    Graph("segment", lambda s, q: SegmentStage(s),
          lambda t: ((t.key, t.query, t.skip8, t.skip4, *t.state), (t.prob,)), "objects"),
    Graph("memorize", MemorizeStage,
          lambda t: ((t.key, t.f16, t.prob, t.others, *t.state), t.next_state), "objects",
          min_queue=2),
    # the step with its memory read-out and mask logit exposed: the step-parity gate's view
    Graph("probe", lambda s, q: StepStage(s, q, with_readout=True),
          lambda t: ((t.frame, *t.state), (t.prob, *t.next_state, t.readout, t.logit)),
          "gate"),
)}


def graph_names(queue: int, *roles: str) -> tuple[str, ...]:
    """The graphs of these roles that exist at ``queue``, in registry order."""
    return tuple(n for n, g in GRAPHS.items() if g.role in roles and queue >= g.min_queue)


SINGLE_GRAPHS = graph_names(1, "single")  # one object: init, step


def multi_graphs(queue: int) -> tuple[str, ...]:
    """The graphs of the K-object loop; at queue 1 nothing is memorized."""
    return graph_names(queue, "objects")


def shipped_graphs(queue: int, objects: bool = True) -> tuple[str, ...]:
    """The graphs an export ships: init and step, and the K-object loop's unless
    ``objects`` is off (mvos-export --single-object)."""
    return graph_names(queue, "single", *(("objects",) if objects else ()))


def tflite_file(precision: str) -> str:
    """The one TFLite model of a precision ("fp32", "fp16") in an export folder: every
    shipped graph is one of its signatures, keyed by the graph's name, over one set of
    weights (export/build/merge.py)."""
    return f"model_{precision}.tflite"


def config_specs(cfg: StudentConfig, queue: int, height: int,
                 width: int) -> dict[str, GraphSpec]:
    """Every graph's declared I/O at ``queue``, from the config alone (a manifest is
    checked with it)."""
    tensors = Tensors.of(cfg, queue, height, width)
    return {name: g.spec(tensors) for name, g in GRAPHS.items() if queue >= g.min_queue}


def graph_specs(student: Student, queue: int, height: int, width: int) -> dict[str, GraphSpec]:
    return config_specs(student.config, queue, height, width)


def graph_module(student: Student, queue: int, name: str) -> nn.Module:
    """The graph's module over ``student`` (shared weights), in eval mode."""
    return GRAPHS[name].build(student, queue).eval()
