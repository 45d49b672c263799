"""Per-operator latency of a TFLite graph on this machine's LiteRT interpreter.

    python -m mobilevos_deploy.bench.op_profile MODEL.tflite [--signature step] [--threads 2]

The Python LiteRT interpreter has no op profiler (that lives in ``benchmark_model``), so
each operator is cut out into a one-op model: same operator code, options and constant
buffers, its variable inputs made graph inputs. Each is timed alone on LiteRT with
XNNPACK, as the whole graph would run it. Two things this cannot see: fusions XNNPACK
makes across neighbouring ops (a PAD folded into the next convolution is timed as a PAD
here), and cache effects between ops. So the rows are compared with the whole graph's
time, and the table says what share of it the ops' sum accounts for. Ops whose inputs
are all constants (the DEQUANTIZE of fp16 weights) are folded when the graph is prepared
and cost nothing per step; they are counted, not timed (XNNPACK refuses them alone).
Their consumers must then read what the whole graph hands them: fp32 constants. Cut out
as they stand, a convolution of an fp16 file would get its weights as a variable input,
which XNNPACK cannot pack once (or refuses, leaving a slow reference kernel), and the op
sum came out 7x the whole graph's time; so the one-op model gets the dequantized weights
as an fp32 constant buffer instead (``_fold_fp16_weights``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..export.build.flatbuf import pack_model


@dataclass(frozen=True)
class OpTime:
    index: int  # position in subgraph 0's execution order
    op: str  # builtin operator name, e.g. "BATCH_MATMUL"
    output_shape: tuple[int, ...]
    ms: float  # median over the runs; 0.0 for an op on constants only
    constant: bool = False  # every input is a constant: folded at preparation, not timed


@dataclass(frozen=True)
class OpProfile:
    model: str
    threads: int
    whole_ms: float  # the unmodified graph, median over the same number of runs
    ops: list[OpTime]

    def by_op(self) -> list[tuple[str, int, float]]:
        """(operator, count, total ms), slowest first."""
        total: dict[str, list[float]] = {}
        for t in self.ops:
            total.setdefault(t.op, []).append(t.ms)
        rows = [(op, len(v), sum(v)) for op, v in total.items()]
        return sorted(rows, key=lambda r: -r[2])


def _schema():
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _op_names(fb) -> dict[int, str]:
    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _fp16_weights(fb, model) -> dict[int, np.ndarray]:
    """Subgraph 0's DEQUANTIZE outputs whose input is an fp16 constant, by tensor index,
    with the fp32 values the whole graph computes once when it is prepared."""
    graph = model.subgraphs[0]
    folded = {}
    for op in graph.operators:
        if _builtin(model, op) != fb.BuiltinOperator.DEQUANTIZE:
            continue
        source = graph.tensors[op.inputs[0]]
        if source.type == fb.TensorType.FLOAT16 and _is_constant(model, source):
            data = np.asarray(model.buffers[source.buffer].data, dtype=np.uint8)
            folded[op.outputs[0]] = data.view(np.float16).astype(np.float32)
    return folded


def _fold_fp16_weights(fb, graph, used: list[int], folded: dict[int, np.ndarray],
                       buffers: list) -> list:
    """The one-op model's tensors (``used``, in order): each folded DEQUANTIZE output
    becomes a constant reading a new fp32 buffer appended to ``buffers``, so XNNPACK
    packs it once as static weights, as in the whole graph. The model's own tensor
    objects are copied, never changed: every one-op model shares them."""
    tensors = []
    for old in used:
        tensor = graph.tensors[old]
        if old in folded:
            tensor = copy.copy(tensor)
            constant = fb.BufferT()
            constant.data = folded[old].view(np.uint8)
            tensor.type, tensor.buffer = fb.TensorType.FLOAT32, len(buffers)
            buffers.append(constant)
        tensors.append(tensor)
    return tensors


def one_op_models(buf: bytes):
    """Yields (index, operator name, output shape, one-op model bytes or None when the op
    reads constants only) for subgraph 0."""
    fb = _schema()
    names = _op_names(fb)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    graph = model.subgraphs[0]
    folded = _fp16_weights(fb, model)
    for index, op in enumerate(graph.operators):
        used = [i for i in [*op.inputs, *op.outputs] if i >= 0]
        remap = {old: new for new, old in enumerate(dict.fromkeys(used))}
        sub = fb.SubGraphT()
        weights = {i: folded[i] for i in op.inputs if i in folded}
        buffers = list(model.buffers)
        sub.tensors = _fold_fp16_weights(fb, graph, list(remap), weights, buffers)
        cut = fb.OperatorT()
        for field, value in vars(op).items():
            setattr(cut, field, value)
        cut.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        cut.outputs = [remap[i] for i in op.outputs]
        sub.operators = [cut]
        sub.inputs = [remap[i] for i in dict.fromkeys(op.inputs)
                      if i >= 0 and not _is_constant(model, graph.tensors[i]) and i not in weights]
        sub.outputs = list(cut.outputs)
        builtin = _builtin(model, op)
        shape = tuple(int(v) for v in graph.tensors[op.outputs[0]].shape)
        if not sub.inputs:
            yield index, names.get(builtin, str(builtin)), shape, None
            continue
        one = fb.ModelT()
        for field in ("version", "operatorCodes", "description"):
            setattr(one, field, getattr(model, field))
        one.buffers, one.subgraphs = buffers, [sub]
        yield index, names.get(builtin, str(builtin)), shape, pack_model(one, len(buf))


def _median_ms(content: bytes, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"],
                               rng.random(detail["shape"]).astype(detail["dtype"]))
    interpreter.invoke()  # warm-up: XNNPACK packs weights on the first call
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def profile_ops(model: Path, threads: int = 2, runs: int = 5,
                signature: str = "step") -> OpProfile:
    """Per-op times of one graph: ``signature`` of the export's model, or a one-graph file."""
    from ..export.build.merge import extract_graph

    whole = model.read_bytes()
    buf = extract_graph(whole, signature)
    ops = [OpTime(index, name, shape, 0.0, True) if content is None else
           OpTime(index, name, shape, _median_ms(content, threads, runs))
           for index, name, shape, content in one_op_models(buf)]
    label = str(model) if buf is whole else f"{model} ({signature})"
    return OpProfile(label, threads, _median_ms(buf, threads, runs), ops)


def format_profile(profile: OpProfile, top: int = 15) -> str:
    total = sum(t.ms for t in profile.ops)
    folded = sum(t.constant for t in profile.ops)
    lines = [f"{profile.model}: whole graph {profile.whole_ms:.1f} ms, "
             f"{len(profile.ops)} ops, timed alone they sum to {total:.1f} ms "
             f"({profile.threads} threads)"
             + (f"; {folded} of them read constants only (folded when the graph is "
                "prepared, not timed)" if folded else ""),
             "", "| operator | count | ms | share of op sum |", "|---|---|---|---|"]
    for op, count, ms in profile.by_op():
        lines.append(f"| {op} | {count} | {ms:.1f} | {100 * ms / total:.0f} % |")
    lines += ["", f"slowest {top} ops:", "", "| # | operator | output shape | ms |",
              "|---|---|---|---|"]
    for t in sorted(profile.ops, key=lambda t: -t.ms)[:top]:
        lines.append(f"| {t.index} | {t.op} | {'x'.join(map(str, t.output_shape))} | "
                     f"{t.ms:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--signature", default="step",
                        help="the graph of a multi-signature model (default: step)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print(format_profile(profile_ops(args.model, args.threads, args.runs, args.signature),
                         args.top))


if __name__ == "__main__":
    main()
