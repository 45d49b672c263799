"""One calling convention for the three runtimes: dict of NCHW/3-D numpy arrays in and out.

Each runner converts between the graph's declared ONNX layouts and its own: LiteRT takes
and gives 4-D tensors as NHWC (onnx2tf's convention) and 3-D state tensors unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..model.graphs import GraphSpec
from ..model.student import ValueEncoder

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def exact_runner(module: nn.Module, spec: GraphSpec, own_copy: bool = True) -> Runner:
    """PyTorch in float64 on a copy of ``module`` (on ``module`` itself, already float64,
    with ``own_copy`` off): the step gates' exact reference."""
    exact = copy.deepcopy(module).double() if own_copy else module

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = exact(*(torch.from_numpy(inputs[n]).double() for n in spec.input_names))
        return {n: o.numpy() for n, o in zip(spec.output_names, outs, strict=True)}

    return run


KEEP_GIVEN = 4  # answers exact_given_prob keeps (each a float64 step's outputs)
GivenProbRunner = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


def exact_given_prob(module: nn.Module, spec: GraphSpec) -> GivenProbRunner:
    """The step (or probe) in float64, its memory write encoding a given probability:
    ``run(inputs, prob)`` is ``exact_runner``'s step with ``prob`` (a runtime's own,
    B x 1 x H x W) in place of the probability the graph computed, where the value
    encoder reads it. Given the exact probability it is ``exact_runner`` bit for bit.

    What a runtime wrote is then judged against what exact arithmetic writes from the mask
    that runtime predicted (parity.step_parity): its own error in the value path, apart
    from its probability's error, which is judged on ``prob`` itself."""
    exact = copy.deepcopy(module).double()
    encoders = [m for m in exact.modules() if isinstance(m, ValueEncoder)]
    if len(encoders) != 1:
        raise ValueError(f"{spec.name}: expected one value encoder, found {len(encoders)}")
    given: list[torch.Tensor] = []  # the hook's one slot: the probability to encode
    calls: list[int] = []
    lock = threading.Lock()

    def swap(_, args):  # the encoder's input: B x 2 x H x W (probability, other objects)
        masks, f16 = args
        calls.append(1)
        if len(calls) > 1:  # which call would be the step's own mask?
            raise ValueError(f"{spec.name}: the value encoder ran more than once in a step")
        if given[0].shape != masks[:, :1].shape:
            raise ValueError(f"a given probability of shape {tuple(given[0].shape)} for a "
                             f"value encoder input of shape {tuple(masks.shape)}")
        return torch.cat([given[0], masks[:, 1:]], dim=1), f16

    encoders[0].register_forward_pre_hook(swap)

    # PyTorch's floor is asked again by every gate that runs: the last few answers kept
    last: OrderedDict[bytes, dict[str, np.ndarray]] = OrderedDict()

    def run(inputs: dict[str, np.ndarray], prob: np.ndarray) -> dict[str, np.ndarray]:
        """At queue 1 the step writes no memory (no encoder call): the exact step."""
        digest = hashlib.sha256()
        for x in (*(inputs[n] for n in spec.input_names), prob):
            x = np.ascontiguousarray(x)
            digest.update(f"{x.dtype}{x.shape}".encode() + x.tobytes())
        with lock:
            key = digest.digest()
            if key in last:
                last.move_to_end(key)
                return dict(last[key])
            given[:], calls[:] = [torch.from_numpy(np.asarray(prob)).double()], []
            try:
                with torch.no_grad():
                    outs = exact(*(torch.from_numpy(inputs[n]).double()
                                   for n in spec.input_names))
            finally:
                given.clear()
            result = {n: o.numpy() for n, o in zip(spec.output_names, outs, strict=True)}
            last[key] = result
            if len(last) > KEEP_GIVEN:
                last.popitem(last=False)
        return dict(result)

    return run


def torch_runner(module: nn.Module, spec: GraphSpec) -> Runner:
    """PyTorch eager on a channels-last copy of ``module`` (the caller's is untouched):
    the same model and numerics to ~1e-6, and about 1.35x as fast on CPU as NCHW
    (``benchmarks/torch_layout.py``); the PyTorch rollout is most of an export's gate time."""
    fast = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def arg(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = fast(*(arg(inputs[n]) for n in spec.input_names))
        return {n: o.contiguous().numpy() for n, o in zip(spec.output_names, outs, strict=True)}

    return run


def ort_options(threads: int = 2) -> ort.SessionOptions:
    """Session options for graphs that run in turn in one loop (init/step, or encode,
    segment and memorize): ``threads`` intra-op threads that stop spinning when a run
    returns.

    ONNX Runtime's threads spin after a run, waiting for their session's next one. In a
    loop of several sessions, each session's spinning threads took the two cores from the
    next: the K-object loop at 480x864 took 232 ms a frame for one object against 147 ms
    for its graphs run one at a time. Spinning off altogether made every operator wake
    its threads, and a step ~20 % slower. ``session.force_spinning_stop`` keeps the
    spinning inside a run and stops it at the run's end (benchmarks/objects_latency.py).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def onnx_runner(path: Path, spec: GraphSpec, threads: int = 2) -> Runner:
    session = ort.InferenceSession(str(path), ort_options(threads),
                                   providers=["CPUExecutionProvider"])

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = session.run(spec.output_names, {n: inputs[n] for n in spec.input_names})
        return dict(zip(spec.output_names, outs, strict=True))

    return run


def tflite_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The declared TFLite shape: 4-D NCHW becomes NHWC, 3-D state stays as it is."""
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _from_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def tflite_runner(path: Path, spec: GraphSpec, threads: int = 2, interpreter=None) -> Runner:
    """The graph's signature (keyed by its name) of a TFLite file: the export's one model,
    or a one-graph file. ``interpreter``: one already open on ``path``, whose other
    signatures other runners use (each signature has a subgraph, and tensors, of its own)."""
    from ai_edge_litert.interpreter import Interpreter

    if interpreter is None:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = _signature(interpreter, path, spec.name)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = runner(**{n: _to_nhwc(inputs[n]) for n in spec.input_names})
        return {n: _from_nhwc(outs[n]) for n in spec.output_names}

    return run


def _signature(interpreter, path: Path, key: str):
    keys = list(interpreter.get_signature_list())
    if key not in keys:
        raise AssertionError(f"{path.name}: no signature {key!r} (it has {', '.join(keys)})")
    return interpreter.get_signature_runner(key)


def check_io(path: Path, spec: GraphSpec, interpreter=None) -> None:
    """The file's signature of the graph (keyed by its name) has the declared names, and
    shapes in the declared layouts."""
    from ai_edge_litert.interpreter import Interpreter

    sig = _signature(interpreter or Interpreter(model_path=str(path)), path, spec.name)
    inputs, outputs = sig.get_input_details(), sig.get_output_details()
    aliased = {d["index"] for d in inputs.values()} & {d["index"] for d in outputs.values()}
    if aliased:  # a runtime binding one buffer per signature tensor computes from garbage
        raise AssertionError(f"{path.name}: an output is also an input tensor "
                             f"(tensor {sorted(aliased)}); see stages.pass_through")
    for kind, details, tensors in (("input", inputs, spec.inputs),
                                   ("output", outputs, spec.outputs)):
        for t in tensors:
            if t.name not in details:
                raise AssertionError(f"{path.name}: no {kind} named {t.name!r}")
            want = tflite_shape(t.shape)
            got = tuple(int(d) for d in details[t.name]["shape"])
            if got != want:
                raise AssertionError(f"{path.name}: {kind} {t.name} is {got}, expected {want}")


def gpu_runner(session, name: str, spec: GraphSpec) -> Runner:
    """The graph's signature of a file already loaded into a ``GpuSession`` under ``name``."""

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = session.run(name, {n: _to_nhwc(inputs[n]) for n in spec.input_names},
                           signature=spec.name)
        return {n: _from_nhwc(outs[n]) for n in spec.output_names}

    return run
