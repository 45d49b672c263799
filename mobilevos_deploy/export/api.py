"""export_model: one (student, queue, size) → ONNX graphs + one TFLite model per precision
(fp32, fp16), every graph a signature of it, gated, with a manifest.

The recipe, over one ``Reference`` built once (gates/reference.py):
  1. every shipped graph, and the gates' probe, as ONNX (build/onnx.py)
  2. ONNX → TFLite fp32 and fp16 in TensorFlow children (build/convert.py), while PyTorch
     builds the reference; once converted, each precision's graphs merged into one model
     (build/merge.py)
  3. then LiteRT's GPU accelerator and TensorFlow 2.17's analyzer on the models, in
     threads of their own (gates/gpu.py, gates/analyzer.py)
  4. the gates on PyTorch and ONNX Runtime (gates/cpu.py)
  5. the gates on the TFLite files
  6. nothing is written unless every gate passed; then the files are re-checked, the
     manifest written and the folder moved into place (artifact/)
What every gate compares, its limits and why: docs/GATES.md.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from ..errors import UserError
from ..files import real_out
from ..model.checkpoint import ChosenStudent
from ..model.graphs import (
    GRAPH_REVISION,
    graph_module,
    graph_specs,
    shipped_graphs,
    tflite_file,
)
from ..model.profile import check_memory
from ..model.stages import STRIDE
from ..proc import reuse_freed_memory
from ..runtime.runners import check_io, onnx_runner, tflite_runner
from .artifact.folder import publish, staged
from .artifact.manifest import (
    MANIFEST,
    SCHEMA,
    feeds,
    file_table,
    io_spec,
    models,
    tool_versions,
    verify_written,
)
from .build.convert import Conversion
from .build.litert_torch import LitertTorchConversion
from .build.onnx import export_onnx
from .gates import cpu
from .gates.analyzer import GpuReport, gpu_delegate_gate
from .gates.gpu import BufferLimit, buffer_gate, gpu_run_gate
from .gates.parity import GateError, GateResult
from .gates.reference import Reference
from .summary import summary

PRECISIONS = ("fp32", "fp16")
CONVERTERS = ("onnx2tf", "litert-torch")
DEFAULT_CONVERTER = "onnx2tf"
T = TypeVar("T")
__all__ = ["PRECISIONS", "ExportResult", "GateError", "default_folder_name", "export_model",
           "shipped_graphs"]


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: dict
    gates: list[GateResult]
    gpu: dict[str, GpuReport] | None  # None when the check could not run (and was allowed)
    warnings: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, and "total"

    def summary(self) -> str:
        """What mvos-export prints: one line per gate, from the manifest."""
        return summary(self.manifest, self.seconds, self.folder)


def default_folder_name(variant: str, queue: int, height: int, width: int) -> str:
    return f"{variant}_q{queue}_{height}x{width}"


class _Clock:
    """Wall seconds per phase (laps) and per gate (``timed``), for the manifest."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.cpu_start = time.process_time()
        self.phases: dict[str, float] = {}
        self.gates: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self.last
        self.last = now

    def timed(self, name: str, work: Callable[..., T], *args) -> T:
        begin = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.gates[name] = self.gates.get(name, 0.0) + time.perf_counter() - begin

    def cpu(self) -> float:
        """CPU seconds of this process (all its threads) since the export began."""
        return time.process_time() - self.cpu_start

    def total(self) -> dict[str, float]:
        return {**self.phases, "total": time.perf_counter() - self.start}


def export_model(chosen: ChosenStudent, queue: int, height: int, width: int, folder: Path, *,
                 precisions: Sequence[str] = PRECISIONS, allow_cpu_fallback: bool = False,
                 objects: bool = True, gpu_buffer: BufferLimit | None = None,
                 converter: str = DEFAULT_CONVERTER) -> ExportResult:
    """Export, gate and write ``folder`` (replaced whole, or left untouched on failure).
    ``objects``: ship the K-object graphs (runtime/loop.py) beside init and step.
    ``gpu_buffer``: the target GPU's largest buffer (default: the s22 profile's figure,
    WebGPU's default 128 MiB). ``converter``: "onnx2tf" (ONNX → TensorFlow → TFLite) or
    "litert-torch" (PyTorch → TFLite); the gates are the same for both."""
    if converter not in CONVERTERS:
        raise UserError(f"unknown converter {converter!r}; choose one of "
                        f"{', '.join(CONVERTERS)}")
    gpu_buffer = gpu_buffer or BufferLimit(128 * 2**20, "WebGPU's default "
                                           "maxStorageBufferBindingSize (no measured figure)")
    clock, warnings = _Clock(), []
    reuse_freed_memory()
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise UserError(f"unknown precision {unknown or precisions}; choose from fp32, fp16")
    student = chosen.student
    specs = graph_specs(student, queue, height, width)
    if (height // STRIDE) * (width // STRIDE) < 2:  # the state's position axis would be 1
        raise UserError(f"{height}x{width} is one position at stride {STRIDE}, too small to "
                        "export (onnx2tf cannot keep the state's layout); choose a size with "
                        f"at least two, such as {STRIDE}x{2 * STRIDE}")
    check_memory(student.config, queue, height, width, "an export")  # before building
    shipped = shipped_graphs(queue, objects)
    folder = real_out(folder)  # through a symlink: the folder it points to is replaced
    with staged(folder) as staging:
        work = staging / ".work"
        work.mkdir()

        # 1. every shipped graph, and the gates' probe, as ONNX
        onnx_files = {name: (staging if name in shipped else work) / f"{name}.onnx"
                      for name in (*shipped, "probe")}
        for name, path in onnx_files.items():
            export_onnx(graph_module(student, queue, name), specs[name], path)
        clock.lap("onnx")

        # 2. → TFLite in converter children, while PyTorch builds the reference
        if converter == "onnx2tf":
            conversion = Conversion({n: (p, specs[n]) for n, p in onnx_files.items()}, work,
                                    fp32_only=frozenset({"probe"}), shipped=shipped)
        else:
            conversion = LitertTorchConversion(
                {n: graph_module(student, queue, n) for n in (*shipped, "probe")}, specs,
                shipped, work)
        converted: Future = Future()
        ref = None
        with ThreadPoolExecutor(2) as pool:
            try:
                # one PyTorch thread while the converters hold both cores: two OpenMP
                # threads would wait on each other at every op
                with _torch_threads(1):
                    ref = Reference(student, queue, height, width, objects)
                clock.lap("reference")

                # 3. once converted: the GPU accelerator and the analyzer, in threads
                on_gpu = pool.submit(_when_converted, conversion, converted, lambda tfl:
                                     clock.timed("gpu_run", gpu_run_gate,
                                                 _models(tfl, precisions), specs,
                                                 ref.for_gpu(), allow_cpu_fallback,
                                                 warnings, work),
                                     )
                analyzer = pool.submit(lambda: gpu_delegate_gate(
                    _models(converted.result(), precisions), allow_cpu_fallback, warnings))

                # 4. the gates on PyTorch and ONNX Runtime
                gates = _onnx_gates(ref, onnx_files, clock)
                clock.lap("onnx_gates")

                # 5. the gates on the TFLite files
                tfl = converted.result()
                clock.lap("convert_wait")
                for path in _models(tfl, precisions):
                    shutil.copyfile(path, staging / path.name)
                    try:
                        for graph in shipped:
                            check_io(staging / path.name, specs[graph])
                    except AssertionError as exc:
                        raise GateError(f"the converted model is not the graphs declared: "
                                        f"{exc}; nothing was written") from None
                gates += _tflite_gates(ref, tfl, gates, clock)
                gates.append(buffer_gate(_models(tfl, precisions), gpu_buffer))
                clock.lap("tflite_gates")

                gpu, gpu_check_entry = analyzer.result()
                gpu_gates, gpu_run_entry = on_gpu.result()
                gates += gpu_gates
                clock.lap("gpu_wait")
            finally:
                conversion.cancel()  # an export failing early stops the converter ...
                if ref is not None:
                    ref.release()  # ... and nothing waits for a rollout that never comes

        # 6. nothing is written unless every gate passed
        failed = [g for g in gates if not g.passed]
        if failed:
            rows = "\n".join(f"  {g.name:<20} {row}" for g in failed for row in g.offending)
            raise GateError(f"export of {chosen.variant} queue {queue} at {height}x{width} "
                            f"failed {len(failed)} gate(s); nothing was written:\n{rows}")
        shutil.rmtree(work)
        try:
            verify_written(staging, specs, list(shipped))
        except Exception as exc:  # the ONNX checker's, the interpreter's or our own
            raise GateError(f"a written file failed its final check ({type(exc).__name__}: "
                            f"{exc}); nothing was written") from None
        seconds = clock.total()
        manifest = {
            "schema": SCHEMA,
            "graph_revision": GRAPH_REVISION,
            **chosen.manifest_entry(),
            "queue": queue,
            "size": [height, width],
            "precisions": list(precisions),
            "graphs": {n: io_spec(specs[n]) for n in shipped},
            "models": models(staging, 2 * sum(p.numel() for p in student.parameters())),
            "feeds": feeds(specs["step"]),
            "files": file_table(staging),
            "converter": {"name": converter, **conversion.versions},
            "tools": tool_versions(),
            "gates": {g.name: {"passed": g.passed, **g.figures} for g in gates},
            "gpu_check": gpu_check_entry,
            "gpu_run": gpu_run_entry,
            "seconds": {"phases": seconds, "gates": dict(clock.gates), "cpu": {
                "process": clock.cpu(), "conversion": conversion.cpu_s,
                "gpu_worker": gpu_run_entry.get("worker_cpu_s")}},
        }
        text = json.dumps(manifest, indent=2) + "\n"
        (staging / MANIFEST).write_text(text)
        publish(staging, folder)
    return ExportResult(folder, json.loads(text), gates, gpu, warnings, seconds)


def _onnx_gates(ref: Reference, onnx_files: dict[str, Path], clock: _Clock) -> list[GateResult]:
    """Step parity and memory dependence, PyTorch's rollout (which the rollout gates and
    the GPU gate read), ONNX Runtime's rollout, the fp16-compute rollout, and the
    K-object gates on ONNX Runtime."""
    onnx = {g: onnx_runner(path, ref.specs[g]) for g, path in onnx_files.items()}
    gates = [clock.timed("step_parity", cpu.step_parity, ref, {"onnx": onnx["probe"]}),
             clock.timed("memory_dependence", cpu.memory_dependence, ref)]
    clock.timed("pytorch_rollout", ref.rollout)
    gates.append(clock.timed("rollout_onnx", cpu.fp32_rollout, "rollout_onnx", ref,
                             onnx["init"], onnx["step"]))
    gates.append(clock.timed("rollout_fp16_compute", cpu.fp16_compute, ref))
    if ref.objects is not None:
        run = {g: onnx[g] for g in ref.objects.inputs}
        gates += [clock.timed("objects_parity", cpu.objects_parity, ref, {"onnx": run}),
                  clock.timed("objects_dependence", cpu.objects_dependence, ref),
                  clock.timed("rollout_objects_onnx", cpu.objects_rollout,
                              "rollout_objects_onnx", ref, run, False)]
    return gates


def _tflite_gates(ref: Reference, tfl: dict[str, Path], gates: list[GateResult],
                  clock: _Clock) -> list[GateResult]:
    """TFLite fp32 added to the step-parity (and objects-parity) gate in ``gates``; the
    rollouts of TFLite fp32 and fp16, one object and two, on the merged models' signatures
    (the probe, never shipped, from its own file)."""
    from ai_edge_litert.interpreter import Interpreter

    run: dict[str, dict] = {}
    for p in ("fp32", "fp16"):
        model = tfl[tflite_file(p)]
        interpreter = Interpreter(model_path=str(model), num_threads=2)
        run[p] = {g: tflite_runner(model, ref.specs[g], interpreter=interpreter)
                  for g in interpreter.get_signature_list()}
    by_name = {g.name: g for g in gates}
    probe = tflite_runner(tfl["probe_fp32"], ref.specs["probe"])
    cpu.merge(by_name["step_parity"], clock.timed("step_parity", cpu.step_parity, ref,
                                                  {"tflite32": probe}))
    more = [clock.timed("rollout_tflite_fp32", cpu.fp32_rollout, "rollout_tflite_fp32", ref,
                        run["fp32"]["init"], run["fp32"]["step"]),
            clock.timed("rollout_tflite_fp16", cpu.fp16_rollout, "rollout_tflite_fp16", ref,
                        run["fp16"]["init"], run["fp16"]["step"])]
    if ref.objects is not None and "objects_parity" in by_name:
        graphs = ref.objects.inputs
        run32 = {g: run["fp32"][g] for g in graphs}
        run16 = {g: run["fp16"][g] for g in graphs}
        cpu.merge(by_name["objects_parity"], clock.timed(
            "objects_parity", cpu.objects_parity, ref, {"tflite32": run32}))
        more += [clock.timed("rollout_objects_tflite_fp32", cpu.objects_rollout,
                             "rollout_objects_tflite_fp32", ref, run32, False),
                 clock.timed("rollout_objects_tflite_fp16", cpu.objects_rollout,
                             "rollout_objects_tflite_fp16", ref, run16, True)]
    return more


def _models(tfl: dict[str, Path], precisions: Sequence[str]) -> list[Path]:
    """The merged models that ship, one per precision."""
    return [tfl[tflite_file(p)] for p in precisions]


def _when_converted(conversion, converted: Future, then):
    """Waits for the conversion (only here), hands its files to ``converted``, runs
    ``then`` on them."""
    try:
        tfl = conversion.result()
    except BaseException as exc:
        converted.set_exception(exc)
        raise
    converted.set_result(tfl)
    return then(tfl)


@contextmanager
def _torch_threads(n: int):
    """PyTorch's intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
