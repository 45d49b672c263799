"""Host benchmark of one exported step graph on one engine, in a child process.

    python -m mobilevos_deploy.bench.host EXPORT_DIR ENGINE PRECISION THREADS WARMUP RUNS

Each (point, engine) runs in a fresh process so that its peak resident memory (VmHWM)
belongs to that engine and model alone, and thread pools do not leak between engines. It
prints one JSON line: init / first / warm-up / per-run times in ms, and peak memory in MB.
Engines: ``tflite`` (LiteRT interpreter, XNNPACK, fp32 or fp16 file), ``tflite-gpu``
(LiteRT's GPU accelerator on the Vulkan device present, precision loss allowed as on a
phone; timed inside its worker process, whose peak memory is reported, and the device is
named: a software device's latency is not a GPU figure), ``onnx`` (ONNX Runtime, CPU
provider) and ``torch`` (PyTorch eager on the student the manifest names).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..model.graphs import tflite_file
from ..proc import child_setup

ENGINES = ("tflite", "tflite-gpu", "onnx", "torch")
MARK = "MVOS_HOST_RESULT "


def _inputs(manifest: dict, layout: str) -> dict[str, np.ndarray]:
    """Deterministic step inputs in the engine's layout ("onnx" NCHW or "tflite" NHWC)."""
    rng = np.random.default_rng(0)
    out = {}
    for t in manifest["graphs"]["step"]["inputs"]:
        shape = t[layout]["shape"]
        value = rng.random(shape, dtype=np.float32)
        out[t["name"]] = np.ones(shape, np.float32) if t["name"] == "mem_valid" else value
    return out


def _loader(folder: Path, manifest: dict, engine: str, precision: str,
            threads: int) -> Callable[[], Callable[[], object]]:
    """Returns a function that builds the engine (timed as init) and returns one call."""
    if engine == "tflite":
        def load():
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_path=str(folder / tflite_file(precision)),
                                      num_threads=threads)
            runner = interpreter.get_signature_runner("step")
            feeds = _inputs(manifest, "tflite")
            return lambda: runner(**feeds)
        return load
    if engine == "tflite-gpu":
        def load():
            from ..export.gates.gpu import delegation_rows
            from ..runtime.gpu import GpuSession

            session = GpuSession()
            path = folder / tflite_file(precision)
            report = session.load("model", path, enforce_f32=False)
            refused = delegation_rows({path.name: report})
            if refused:
                raise UserError("LiteRT's GPU accelerator refuses ops of the step:\n"
                                + "\n".join(refused))
            return _GpuCall(session, _inputs(manifest, "tflite"))
        return load
    if engine == "onnx":
        def load():
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            session = ort.InferenceSession(str(folder / "step.onnx"), opts,
                                           providers=["CPUExecutionProvider"])
            feeds = _inputs(manifest, "onnx")
            return lambda: session.run(None, feeds)
        return load
    if engine == "torch":
        def load():
            import torch

            from ..model.checkpoint import manifest_student
            from ..model.stages import StepStage

            torch.set_num_threads(threads)
            student = manifest_student(manifest, folder)
            step = StepStage(student, manifest["queue"]).eval()
            feeds = [torch.from_numpy(v) for v in _inputs(manifest, "onnx").values()]

            def call():
                with torch.inference_mode():
                    return step(*feeds)
            return call
        return load
    raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


class _GpuCall:
    """The GPU engine: runs are timed inside the worker (no pipe or copy in the figure)."""

    def __init__(self, session, feeds: dict[str, np.ndarray]) -> None:
        self.session, self.feeds = session, feeds

    def times(self, count: int) -> list[float]:
        return self.session.time("model", self.feeds, 0, count, signature="step")["times_ms"]

    def extra(self) -> dict:
        adapter = self.session.adapter
        return {"gpu_device": adapter.describe() if adapter else "",
                "peak_memory_mb": self.session.peak_memory_mb()}


def measure(folder: Path, engine: str, precision: str, threads: int, warmup: int,
            runs: int) -> dict:
    from ..export.artifact.verify import graph_files, read_export

    # the file holding the step it times
    manifest = read_export(folder, graph_files(engine, precision, ("step",)))
    load = _loader(folder, manifest, engine, precision, threads)
    start = time.perf_counter()
    call = load()
    init_ms = (time.perf_counter() - start) * 1e3
    if isinstance(call, _GpuCall):
        times = call.times(1 + warmup + runs)
    else:
        times = []
        for _ in range(1 + warmup + runs):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1e3)
    timed = times[1 + warmup :]
    result = {"init_ms": init_ms, "first_ms": times[0],
              "warmup_ms": statistics.fmean(times[1 : 1 + warmup]) if warmup else None,
              "times_ms": timed,
              "peak_memory_mb": peak_rss_mb()}
    if isinstance(call, _GpuCall):
        result.update(call.extra())
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over exec, so a child forked from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_in_child(folder: Path, engine: str, precision: str, threads: int, warmup: int,
                 runs: int, timeout_s: float = 1800) -> dict:
    cmd = [sys.executable, "-m", "mobilevos_deploy.bench.host", str(folder), engine, precision,
           str(threads), str(warmup), str(runs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=child_setup())
    except subprocess.TimeoutExpired:
        raise UserError(f"host benchmark of {folder.name} on {engine} exceeded "
                        f"{timeout_s:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise UserError(f"host benchmark of {folder.name} on {engine} failed:\n{tail}")
    return json.loads(lines[-1][len(MARK) :])


def main() -> None:
    folder, engine, precision, threads, warmup, runs = sys.argv[1:7]
    try:
        result = measure(Path(folder), engine, precision, int(threads), int(warmup), int(runs))
    except UserError as exc:  # the parent shows the last lines: the message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
