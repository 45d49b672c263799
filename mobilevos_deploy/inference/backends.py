"""One streaming interface over PyTorch, ONNX Runtime and LiteRT, for one or more objects.

A backend runs at one model size (H x W, multiples of 16) and queue length:

    states = backend.init(frame, [mask, ...])          # every object's first mask
    probs, states = backend.step(frame, states)        # every object on one frame

frame: 1 x 3 x H x W float32 RGB in [0, 1]; mask: 1 x 1 x H x W float32 in [0, 1];
probs: one H x W float32 array per object (its own prediction, before aggregation); a
state is the tuple (mem_keys, mem_values, mem_valid) in the graph's declared (ONNX)
layouts. Several objects follow STCN (mobilevos_deploy.model.objects): the frame is
encoded once, each object segmented against its memory, the probabilities aggregated, and
each memory written from its aggregated probability with the other objects' sum. One
object runs the single-object pair (init, step) on every backend.

``tflite-gpu`` runs the TFLite model on LiteRT's GPU accelerator (runtime/gpu.py) on
whatever Vulkan device is present, with precision loss allowed as on a phone; ``device``
names it, and a software device (SwiftShader) is no GPU: its latency is not a GPU figure.
With one object its state never leaves the accelerator: the worker binds the step's state
outputs as the next step's inputs (two sets of buffers, swapped each frame) and reads back
only the probability; the caller holds the token ``ON_ACCELERATOR`` as the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..export.artifact.verify import graph_files, read_export, verify_files
from ..model.checkpoint import manifest_student, student_for
from ..model.graphs import SINGLE_GRAPHS, GraphSpec, multi_graphs, tflite_file
from ..model.memory import MemoryState
from ..model.objects import first_inputs, memory_inputs
from ..model.profile import check_memory
from ..model.stages import (
    STATE_NAMES,
    StartStage,
    TensorSpec,
    check_size,
    memorize,
    read_prob,
)
from ..model.student import Student
from ..runtime.loop import start_objects, step_objects

BACKENDS = ("torch", "onnx", "tflite", "tflite-gpu")
State = tuple[np.ndarray, ...]


@dataclass
class TorchBackend:
    student: Student
    queue: int
    height: int
    width: int
    name: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    _start: StartStage = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        self._start = StartStage(self.student, self.queue).eval()

    @torch.inference_mode()
    def init(self, frame: np.ndarray, masks: list[np.ndarray]) -> list[State]:
        enc = self.student.key_encoder(torch.from_numpy(frame))
        given, others = first_inputs(torch.stack([torch.from_numpy(m) for m in masks]))
        return [tuple(t.numpy() for t in self._start(enc.key, enc.f16, m, o))
                for m, o in zip(given, others, strict=True)]

    @torch.inference_mode()
    def step(self, frame: np.ndarray, states: list[State]) -> tuple[list[np.ndarray],
                                                                   list[State]]:
        enc = self.student.encode_frame(torch.from_numpy(frame))
        memories = [MemoryState(*(torch.from_numpy(s) for s in state)) for state in states]
        probs = torch.stack([read_prob(self.student, enc, memory)[0] for memory in memories])
        written, others = memory_inputs(probs)
        nxt = [tuple(t.numpy() for t in memorize(self.student, self.queue, memory, enc.key,
                                                 enc.f16, w, o))
               for memory, w, o in zip(memories, written, others, strict=True)]
        return [p[0, 0].numpy() for p in probs], nxt


def _spec(manifest: dict, name: str) -> GraphSpec:
    graph = manifest["graphs"][name]

    def tensors(kind: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t["name"], tuple(t["onnx"]["shape"]), t["dtype"],
                                t["onnx"]["layout"]) for t in graph[kind])

    return GraphSpec(name, tensors("inputs"), tensors("outputs"))


@dataclass
class GraphBackend:
    """An export folder's graphs on ONNX Runtime or LiteRT: init and step for one object;
    encode, start, segment and memorize for several (opened when first needed)."""

    folder: Path
    manifest: dict
    name: str  # "onnx" | "tflite" | "tflite-gpu"
    precision: str
    threads: int = 2
    device: str = "cpu"
    _runners: dict[str, Callable] = field(init=False, repr=False, default_factory=dict)
    _session: object = field(init=False, repr=False, default=None)
    _interpreter: object = field(init=False, repr=False, default=None)
    # tflite-gpu, one object: per step, what the worker read back and the buffers it used
    stream_log: list[dict] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        self.height, self.width = self.manifest["size"]
        self.queue = self.manifest["queue"]
        self._state_out = _spec(self.manifest, "step").output_names[1:]
        self._open(SINGLE_GRAPHS)

    def _open(self, graphs: tuple[str, ...]) -> None:
        """Runners for ``graphs``: an ONNX Runtime session a graph, or signatures of the
        precision's one TFLite model, opened once (one interpreter, or one GPU model)."""
        from ..runtime.runners import gpu_runner, onnx_runner, tflite_runner

        specs = {g: _spec(self.manifest, g) for g in graphs if g not in self._runners}
        if self.name == "onnx":
            self._runners.update({g: onnx_runner(self.folder / f"{g}.onnx", specs[g],
                                                 self.threads) for g in specs})
            return
        path = self.folder / tflite_file(self.precision)
        if self.name == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            if self._interpreter is None:
                self._interpreter = Interpreter(model_path=str(path), num_threads=self.threads)
            self._runners.update({g: tflite_runner(path, specs[g],
                                                   interpreter=self._interpreter)
                                  for g in specs})
            return
        from ..export.gates.gpu import delegation_rows
        from ..runtime.gpu import GpuSession

        if self._session is None:
            self._session = GpuSession()
            report = self._session.load("model", path, enforce_f32=False)
            refused = delegation_rows({path.name: report})
            if refused:
                self._session.close()
                raise UserError("LiteRT's GPU accelerator does not run these ops of the "
                                "export:\n" + "\n".join(refused)
                                + "\nRun it with --backend tflite instead.")
        adapter = self._session.adapter
        self.device = adapter.describe() if adapter else "unknown GPU device"
        self._runners.update({g: gpu_runner(self._session, "model", specs[g]) for g in specs})

    def _multi(self) -> dict[str, Callable]:
        graphs = multi_graphs(self.queue)
        missing = [g for g in graphs if g not in self.manifest["graphs"]]
        if missing:
            raise UserError(f"{self.folder} has no {', '.join(missing)} graph (exported before "
                            "several objects had graphs of their own); export it again with "
                            "mvos-export to run a clip of several objects")
        verify_files(self.folder, self.manifest, graph_files(self.name, self.precision, graphs))
        self._open(graphs)
        return self._runners

    def init(self, frame: np.ndarray, masks: list[np.ndarray]) -> list[State]:
        if len(masks) == 1 and self.name == "tflite-gpu":  # the state stays on the GPU
            self._session.stream_start("model", _nhwc(frame), _nhwc(masks[0]))
            return [ON_ACCELERATOR]
        if len(masks) == 1:
            out = self._runners["init"]({"frame": frame, "mask": masks[0]})
            return [_state(out, STATE_NAMES)]
        return [_state(s, STATE_NAMES) for s in start_objects(self._multi(), frame, masks)]

    def step(self, frame: np.ndarray, states: list[State]) -> tuple[list[np.ndarray],
                                                                   list[State]]:
        if states == [ON_ACCELERATOR]:
            prob, info = self._session.stream_step("model", _nhwc(frame))
            self.stream_log.append(info)
            return [prob[0, :, :, 0]], [ON_ACCELERATOR]
        if len(states) == 1:
            out = self._runners["step"]({"frame": frame,
                                         **dict(zip(STATE_NAMES, states[0], strict=True))})
            return [out["prob"][0, 0]], [_state(out, self._state_out)]
        probs, nxt = step_objects(self._multi(), self.queue, frame,
                                  [dict(zip(STATE_NAMES, s, strict=True)) for s in states])
        return [p[0, 0] for p in probs], [_state(s, STATE_NAMES) for s in nxt]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


# One object on tflite-gpu: its state lives in the GPU worker's tensor buffers (the model's
# step outputs become its next inputs there), so the caller holds only this token
ON_ACCELERATOR: State = ()


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _state(out: dict[str, np.ndarray], names: tuple[str, ...] | list[str]) -> State:
    return tuple(out[n] for n in names)


Backend = TorchBackend | GraphBackend


def open_backend(*, model: Path | None, ckpt: Path | None, backend: str, precision: str,
                 queue: int | None, size: tuple[int, int] | None,
                 threads: int = 2) -> Backend:
    """The backend a user asked for, or a UserError naming the fix.

    ``model`` (an export folder) serves every backend at its exported size and queue;
    ``ckpt`` (or neither: the trained default student) serves PyTorch at ``size``.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision == "fp16" and not backend.startswith("tflite"):
        raise UserError(f"--precision fp16 runs on the TFLite backends only ({backend} runs "
                        "the fp32 graph); add --backend tflite or drop --precision")
    if model is not None and ckpt is not None:
        raise UserError("give --model (an export folder) or --ckpt, not both")
    if model is None:
        if backend != "torch":
            given = f"--ckpt {ckpt}" if ckpt is not None else "the default student"
            raise UserError(f"--backend {backend} runs an exported "
                            f"model: add --backend torch to run {given} in PyTorch, or make "
                            "an export with mvos-export (--ckpt, --queue, --size) and pass "
                            "it as --model")
        if size is None:
            raise UserError("the PyTorch backend needs a model size")
        student = student_for(ckpt, None).student
        check_memory(student.config, queue or 2, *size, "the PyTorch backend", itemsize=4)
        return TorchBackend(student, queue or 2, *size)
    manifest = read_export(model, graph_files(backend, precision))
    if queue is not None and queue != manifest["queue"]:
        raise UserError(f"{model} was exported with queue {manifest['queue']}, not {queue}; "
                        f"export again with --queue {queue}, or drop --queue")
    if size is not None and tuple(size) != tuple(manifest["size"]):
        raise UserError(f"{model} was exported at {manifest['size'][0]}x{manifest['size'][1]}"
                        f"; export again with --size {size[0]}x{size[1]}, or drop --size")
    if backend == "torch":
        student = manifest_student(manifest, model)
        return TorchBackend(student, manifest["queue"], *manifest["size"])
    return GraphBackend(Path(model), manifest, backend, precision, threads)
