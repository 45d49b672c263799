"""The ``gpu_run`` gate: every shipped TFLite file on LiteRT's own GPU accelerator.

1. Delegation: each model (one per precision, every graph a signature) is compiled for
   the GPU alone; the accelerator either takes every graph or names the ops it refuses.
   Anything it refuses fails the export (a loud warning with ``--allow-cpu-fallback``,
   which then runs the model on GPU + CPU).
2. Parity: the init graph on the first frame and mask, and the step graph on the realistic
   state of the step-parity gate, run on the GPU with fp32 enforced
   (``GpuOptions(enforce_f32=True)``, so a real GPU with fp16 is held to the same limits),
   at the step-parity tolerances: prob 1e-4 max abs, every state tensor 1e-4 (1 + |x|).
   fp32 files are compared with PyTorch. fp16 files hold fp16-rounded weights, which
   PyTorch does not have; they are compared with LiteRT's CPU interpreter on the same
   file, so the GPU backend is what is tested (the fp16 weights' own effect is the
   rollout_tflite_fp16 gate's business). On a software device (SwiftShader) a run is CPU
   work, several CPU-seconds for a 480x864 graph (the manifest's ``worker_cpu_s`` sums
   them), and the fp16 twins of the fp32 files are compiled but not run; on a hardware
   device every file runs. The manifest says which ran.
3. Where the device computes in fp16 when allowed (probed, never assumed), the fp16 files
   with precision loss allowed, as a phone runs them, against the PyTorch fp32 rollout,
   as ``parity.fp16_gate`` judges fp16 (``rollout_gpu_fp16``).
4. With the K-object graphs: each of them in step 2 on its realistic input, and the
   two-object loop (loop.py) on the GPU with fp32 enforced, judged against PyTorch's as the
   CPU runtimes' are (``parity.objects_fp32_gate``: ``rollout_objects_gpu``); on a software
   device over its first 4 frames (SOFTWARE_OBJECT_FRAMES).

The figures, the Vulkan adapter and whether it is a software device go to the manifest
under ``gpu_run``, beside the TensorFlow 2.17 analyzer's independent ``gpu_check``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...model.graphs import GraphSpec, multi_graphs
from ...runtime.gpu import GpuSession, LoadReport, computes_in_fp16, largest_tensor
from ...runtime.loop import Encoded, looped_objects, rollout_objects
from ...runtime.runners import gpu_runner, tflite_runner
from .parity import (
    GateError,
    GateResult,
    State,
    fp16_gate,
    looped_steps,
    objects_fp32_gate,
    rollout,
    step_parity,
)

ACCELERATOR = "LiteRT GPU accelerator (ai-edge-litert 2.3, ML Drift over WebGPU/Vulkan)"
# On a software device, run the fp16 twins of the fp32 files too (tests set it)
RUN_FP16_TWINS_ON_SOFTWARE = False


@dataclass(frozen=True)
class GpuInputs:
    """What the GPU runs and what it is compared with (NCHW / 3-D, as the specs declare)."""

    init_inputs: dict[str, np.ndarray]
    init_expected: dict[str, np.ndarray]  # PyTorch
    step_inputs: dict[str, np.ndarray]
    step_expected: dict[str, np.ndarray]  # PyTorch (probe outputs; the step's are a subset)
    frames: np.ndarray  # the rollout clip, for the fp16 rollout
    mask0: np.ndarray
    truth: np.ndarray  # the clip's masks of frames 1..T-1
    # the PyTorch fp32 rollout and the states it read (may still be running)
    reference: Callable[[], tuple[np.ndarray, list[State]]]
    # the K-object graphs: graph → (a realistic input, PyTorch's outputs on it)
    graph_inputs: dict[str, tuple[dict, dict]] = field(default_factory=dict)
    # the two-object clip (frames, first masks K x H x W), PyTorch's loop on it, the queue
    # and the states that loop read
    objects: tuple[np.ndarray, np.ndarray, np.ndarray, int, list] | None = None


@dataclass(frozen=True)
class BufferLimit:
    """The largest tensor the target phone's GPU takes in one buffer, and where the figure
    comes from (a device profile: android_benchmark/devices/)."""

    bytes: int
    source: str
    device: str = "s22"


def buffer_gate(files: list[Path], limit: BufferLimit) -> GateResult:
    """``gpu_buffers``: every tensor of every signature of each model, at fp32, fits in one
    GPU buffer of the target device. Static: read from the file, nothing runs. A tensor
    beyond it is refused on the phone (or, where the backend splits nothing, fails to
    allocate) while a desktop GPU or SwiftShader, with larger buffers, takes it."""
    gate = GateResult("gpu_buffers", True, {"limit_bytes": limit.bytes,
                                            "device": limit.device, "source": limit.source})
    for path in files:
        size, tensor = largest_tensor(path)
        gate.figures[f"{path.name}.largest_bytes"] = size
        gate.figures[f"{path.name}.largest_tensor"] = tensor
        if size > limit.bytes:
            gate.passed = False
            gate.offending.append(f"{path.name}: {tensor} is {size / 2**20:.1f} MiB, beyond "
                                  f"the {limit.bytes / 2**20:.0f} MiB one {limit.device} GPU "
                                  f"buffer holds ({limit.source})")
    return gate


def delegation_rows(reports: dict[str, LoadReport]) -> list[str]:
    rows = []
    for name, r in reports.items():
        if r.fully_accelerated:
            continue
        ops = r.unsupported or [{"op": "?", "reason": r.error or "not fully accelerated"}]
        rows += [f"  gpu_run  {name:<18} {o['op']}: {o['reason']}" for o in ops]
    return rows


def precision_of(path: Path) -> str:
    """"fp32" of ``model_fp32.tflite`` (graphs.tflite_file)."""
    return path.stem.rsplit("_", 1)[1]


def gpu_run_gate(files: list[Path], specs: dict[str, GraphSpec], ref: GpuInputs,
                 allow_cpu_fallback: bool, warnings: list[str], work: Path
                 ) -> tuple[list[GateResult], dict]:
    """``files``: the export's models (graphs.tflite_file), one per precision, each graph a
    signature. Returns the gates (gpu_parity, and rollout_gpu_fp16 where the device has
    fp16) and the manifest entry. Raises UserError for a missing GPU venv or Vulkan device,
    and a refused op, unless ``allow_cpu_fallback``."""
    try:
        session = GpuSession(nice=10)
    except UserError as exc:
        return _not_run(exc, allow_cpu_fallback, warnings)
    with session:
        try:
            fp16 = computes_in_fp16(session, work)
        except UserError as exc:
            return _not_run(exc, allow_cpu_fallback, warnings)
        models = {precision_of(p): p for p in files}
        reports = {p.name: session.load(p.stem, p) for p in files}
        refused = delegation_rows(reports)
        if refused:
            table = "\n".join(refused)
            if not allow_cpu_fallback:
                raise GateError(f"LiteRT's GPU accelerator does not run these ops (they would "
                                f"run on the CPU); nothing was written:\n{table}\nPass "
                                "--allow-cpu-fallback to export anyway.")
            warnings.append(f"WARNING: LiteRT's GPU accelerator refuses these ops; they "
                            f"will run on the CPU:\n{table}")
            for p in files:
                if not reports[p.name].fully_accelerated:
                    session.load(p.stem, p, cpu_fallback=True)
        parity = GateResult("gpu_parity", True)
        entry_files = {}
        software = session.adapter is not None and session.adapter.software
        for precision, p in models.items():
            r = reports[p.name]
            size, tensor = largest_tensor(p)
            entry = entry_files[p.name] = {
                "fully_accelerated": r.fully_accelerated, "unsupported": r.unsupported,
                "compile_s": r.compile_s, "largest_tensor_bytes": size,
                "largest_tensor": tensor, "signatures": {}}
            for graph in r.signatures:
                entry["signatures"][graph] = _graph_parity(
                    session, p, graph, specs[graph], ref, parity,
                    twin=software and not RUN_FP16_TWINS_ON_SOFTWARE and precision == "fp16"
                    and "fp32" in models)
        gates = [parity]
        if fp16 and "fp16" in models:
            gates.append(_fp16_rollout(session, models["fp16"], specs, ref))
        if ref.objects is not None and "fp32" in models:
            gates.append(_objects_rollout(session, models["fp32"], specs, ref))
        worker_cpu_s = session.cpu_seconds()
    adapter = session.adapter
    entry = {
        "verdict": "fully accelerated" if not refused else
                   "not fully accelerated (exported with --allow-cpu-fallback)",
        "accelerator": ACCELERATOR,
        "adapter": None if adapter is None else {
            "name": adapter.name, "backend": adapter.backend, "type": adapter.type},
        "software_device": None if adapter is None else adapter.software,
        "fp16_compute_available": fp16,
        "worker_cpu_s": worker_cpu_s,
        "files": entry_files,
    }
    return gates, entry


def _graph_parity(session: GpuSession, path: Path, graph: str, spec: GraphSpec,
                  ref: GpuInputs, parity: GateResult, twin: bool) -> dict:
    """One signature of a loaded model on the GPU (fp32 enforced) against its reference,
    added to ``parity``; its manifest entry. ``twin``: an fp16 model on a software device,
    whose fp32 twin ran (compiled only)."""
    if twin:
        return {"ran": "no: a software device, and its fp32 twin ran (compiled only)"}
    if graph not in ref.graph_inputs and graph not in ("init", "step"):
        return {"ran": "no: no reference input for this graph (compiled only)"}
    precision = precision_of(path)
    if graph in ref.graph_inputs:
        inputs, expected = ref.graph_inputs[graph]
    else:
        inputs = ref.init_inputs if graph == "init" else ref.step_inputs
        expected = ref.init_expected if graph == "init" else ref.step_expected
    reference = (lambda _, e=expected: e) if precision == "fp32" else tflite_runner(path, spec)
    start = time.perf_counter()
    label = f"{path.stem}/{graph}"
    one = step_parity(spec, reference, {label: gpu_runner(session, path.stem, spec)},
                      inputs, prob_atol=1e-4, state_rtol=1e-4, name="gpu_parity")
    parity.passed = parity.passed and one.passed
    parity.figures.update(one.figures)
    parity.offending += one.offending
    return {"ran": "yes", "computed_in": "fp32 (enforce_f32)",
            "reference": "pytorch" if precision == "fp32" else "litert-cpu (same file)",
            "errors": {k.split(".", 1)[1]: v for k, v in one.figures.items()},
            "run_s": time.perf_counter() - start}


def _fp16_rollout(session: GpuSession, path: Path, specs: dict[str, GraphSpec],
                  ref: GpuInputs) -> GateResult:
    """The fp16 model with precision loss allowed against PyTorch fp32, as
    ``parity.fp16_gate`` judges fp16."""
    name = f"{path.stem}_relaxed"
    session.load(name, path, enforce_f32=False)
    init, step = (gpu_runner(session, name, specs[g]) for g in ("init", "step"))
    probs, states = ref.reference()
    looped = looped_steps(init, step, specs["step"], ref.frames, ref.mask0, states)
    closed = rollout(init, step, specs["step"], ref.frames, ref.mask0)
    return fp16_gate("rollout_gpu_fp16", probs, looped, closed, ref.truth)


# The two-object loop's frames on a software device (SwiftShader), where each graph run at
# 480x864 is several CPU-seconds: all 12 frames would be over a hundred runs. Four frames
# (three steps) still write a memory slot, replace it and read what was written.
SOFTWARE_OBJECT_FRAMES = 4


def _objects_rollout(session: GpuSession, path: Path, specs: dict[str, GraphSpec],
                     ref: GpuInputs) -> GateResult:
    """The two-object loop on the GPU (fp32 files, fp32 enforced) against PyTorch's; on a
    software device over its first SOFTWARE_OBJECT_FRAMES frames."""
    frames, masks0, expected, queue, states = ref.objects
    if session.adapter is not None and session.adapter.software:
        n = min(SOFTWARE_OBJECT_FRAMES, frames.shape[0])
        frames, expected, states = frames[:n], expected[:, : n - 1], states[: n - 1]
    run = {g: gpu_runner(session, path.stem, specs[g]) for g in multi_graphs(queue)}
    encoded = Encoded(run, frames)
    closed, _ = rollout_objects(run, queue, frames, masks0, encoded)
    looped = looped_objects(run, queue, frames, masks0, states, (closed, encoded))
    flat = expected.reshape(-1, *expected.shape[2:])
    gate = objects_fp32_gate("rollout_objects_gpu", flat, looped.reshape(flat.shape),
                             closed.reshape(flat.shape))
    gate.figures["frames"] = int(frames.shape[0])
    return gate


def _not_run(exc: UserError, allow_cpu_fallback: bool, warnings: list[str]
             ) -> tuple[list[GateResult], dict]:
    if not allow_cpu_fallback:
        raise exc
    warnings.append(f"WARNING: not run on LiteRT's GPU accelerator: {exc}")
    return [], {"verdict": "not checked", "reason": str(exc)}
