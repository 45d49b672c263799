"""One streaming interface over PyTorch, ONNX Runtime and LiteRT, for one or more objects.

A backend runs at one model size (H x W, multiples of 16) and queue length:

    state = backend.init(frame, mask)                  # one object
    probs, states = backend.step(frame, [state, ...])  # every object on one frame

frame: 1 x 3 x H x W float32 RGB in [0, 1]; mask: 1 x 1 x H x W float32 in [0, 1];
probs: one H x W float32 array per object; a state is the tuple (mem_keys, mem_values,
mem_valid) in the graph's declared (ONNX) layouts. PyTorch encodes the frame once and
reads every object's memory against that one encoding; the exported step graph has the
frame encoder inside it, so ONNX Runtime and LiteRT run the whole step once per object.

``tflite-gpu`` runs the TFLite files on LiteRT's GPU accelerator (export/gpu_run.py) on
whatever Vulkan device is present, with precision loss allowed as on a phone; ``device``
names it, and a software device (SwiftShader) is no GPU: its latency is not a GPU figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..export.graphs import GraphSpec
from ..export.verify import graph_files, read_export
from ..model.checkpoint import manifest_student, student_for
from ..model.profile import check_memory
from ..model.stages import STATE_NAMES, InitStage, StepStage, TensorSpec, check_size
from ..model.student import Student

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
    _init: InitStage = field(init=False, repr=False)
    _step: StepStage = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_size(self.height, self.width)
        self._init = InitStage(self.student, self.queue).eval()
        self._step = StepStage(self.student, self.queue).eval()

    @torch.inference_mode()
    def init(self, frame: np.ndarray, mask: np.ndarray) -> State:
        return tuple(t.numpy() for t in self._init(torch.from_numpy(frame),
                                                   torch.from_numpy(mask)))

    @torch.inference_mode()
    def step(self, frame: np.ndarray, states: list[State]) -> tuple[list[np.ndarray],
                                                                   list[State]]:
        enc = self.student.key_encoder(torch.from_numpy(frame))
        probs, nxt = [], []
        for state in states:
            prob, *new = self._step.segment(enc, *(torch.from_numpy(s) for s in state))
            probs.append(prob[0, 0].numpy())
            nxt.append(tuple(t.numpy() for t in new))
        return probs, nxt


def _spec(manifest: dict, name: str) -> GraphSpec:
    graph = manifest["graphs"][name]

    def tensors(kind: str) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t["name"], tuple(t["onnx"]["shape"]), t["dtype"],
                                t["onnx"]["layout"]) for t in graph[kind])

    return GraphSpec(name, tensors("inputs"), tensors("outputs"))


@dataclass
class GraphBackend:
    """An export folder's init and step graphs on ONNX Runtime or LiteRT."""

    folder: Path
    manifest: dict
    name: str  # "onnx" | "tflite" | "tflite-gpu"
    precision: str
    threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        from ..export.runtimes import onnx_runner, tflite_runner

        self.height, self.width = self.manifest["size"]
        self.queue = self.manifest["queue"]
        init, step = _spec(self.manifest, "init"), _spec(self.manifest, "step")
        self._state_out = step.output_names[1:]
        if self.name == "tflite-gpu":
            self._init, self._run = self._open_gpu(init, step)
        elif self.name == "onnx":
            self._init = onnx_runner(self.folder / "init.onnx", init, self.threads)
            self._run = onnx_runner(self.folder / "step.onnx", step, self.threads)
        else:
            self._init = tflite_runner(self.folder / f"init_{self.precision}.tflite", init,
                                       self.threads)
            self._run = tflite_runner(self.folder / f"step_{self.precision}.tflite", step,
                                      self.threads)

    def _open_gpu(self, init: GraphSpec, step: GraphSpec):
        from ..export.gpu_gate import delegation_rows
        from ..export.gpu_run import GpuSession
        from ..export.runtimes import gpu_runner

        self._session = GpuSession()
        reports = {}
        for graph in ("init", "step"):
            path = self.folder / f"{graph}_{self.precision}.tflite"
            reports[path.name] = self._session.load(graph, path, enforce_f32=False)
        refused = delegation_rows(reports)
        if refused:
            self._session.close()
            raise UserError("LiteRT's GPU accelerator does not run these ops of the export:\n"
                            + "\n".join(refused) + "\nRun it with --backend tflite instead.")
        adapter = self._session.adapter
        self.device = adapter.describe() if adapter else "unknown GPU device"
        return (gpu_runner(self._session, "init", init),
                gpu_runner(self._session, "step", step))

    def init(self, frame: np.ndarray, mask: np.ndarray) -> State:
        out = self._init({"frame": frame, "mask": mask})
        return tuple(out[n] for n in STATE_NAMES)

    def step(self, frame: np.ndarray, states: list[State]) -> tuple[list[np.ndarray],
                                                                   list[State]]:
        probs, nxt = [], []
        for state in states:
            out = self._run({"frame": frame, **dict(zip(STATE_NAMES, state, strict=True))})
            probs.append(out["prob"][0, 0])
            nxt.append(tuple(out[n] for n in self._state_out))
        return probs, nxt


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
            raise UserError(f"--backend {backend} runs an exported model: make one with "
                            "mvos-export (--ckpt, --queue, --size) and pass it as --model")
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
