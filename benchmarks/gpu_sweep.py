"""GPU verdicts for every variant and queue: LiteRT's GPU accelerator and TF 2.17's analyzer.

    python benchmarks/gpu_sweep.py [--size 480x864] [--queues 1-20] [--variants all]
                                   [--run-queues 1,2,20] [--largest-only]

For each (variant, queue) the init and step graphs are exported to ONNX, converted to
TFLite fp32 and fp16 and merged into one model per precision exactly as mvos-export does.
Then:
- the largest tensor of the model, over its signatures (bytes at fp32: what one GPU
  buffer must hold; the read-out's affinity, tiled over the query axis beyond 128 MiB);
- TensorFlow 2.17.1's analyzer checks both models (the classic delegate's rules);
- LiteRT's GPU accelerator compiles the fp16 model for the GPU alone (fully accelerated,
  or the ops it refuses);
- at ``--run-queues``, one step of the fp16 model runs on the GPU (fp32 enforced) and is
  compared with LiteRT's CPU interpreter on the same file and inputs (max abs error over
  all outputs), to see what the backend does with large buffers.
``--largest-only`` converts the fp32 model alone and prints the largest tensor. The
parity gates are skipped (mvos-export runs them on every export).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilevos_deploy.cli import parse_queues
from mobilevos_deploy.export.build.convert import Conversion
from mobilevos_deploy.export.build.merge import merge_models
from mobilevos_deploy.export.build.onnx import export_onnx
from mobilevos_deploy.export.gates.analyzer import check_gpu
from mobilevos_deploy.model.config import get_variant, variant_names
from mobilevos_deploy.model.graphs import graph_module, graph_specs
from mobilevos_deploy.model.student import build_student
from mobilevos_deploy.runtime.gpu import GpuSession, computes_in_fp16, largest_tensor
from mobilevos_deploy.runtime.runners import tflite_shape


def gpu_vs_cpu(session: GpuSession, path: Path, spec) -> tuple[float, float]:
    """Max abs difference GPU vs CPU interpreter on one step, and the GPU step's seconds."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random(tflite_shape(t.shape), dtype=np.float32) for t in spec.inputs}
    if "mem_valid" in feeds:
        feeds["mem_valid"][:] = 1.0
    cpu = Interpreter(model_path=str(path), num_threads=2).get_signature_runner(
        spec.name)(**feeds)
    session.load("probe_step", path)
    start = time.perf_counter()
    gpu = session.run("probe_step", feeds, signature=spec.name)
    seconds = time.perf_counter() - start
    err = max(float(np.max(np.abs(gpu[k] - cpu[k]))) if np.isfinite(gpu[k]).all()
              else float("inf") for k in cpu)
    return err, seconds


def _convert(student, queue: int, height: int, width: int, tmp: Path,
             fp32_only: bool = False) -> dict[str, Path]:
    """init and step → ONNX → TFLite, merged into model_fp32/fp16.tflite, as an export."""
    specs = graph_specs(student, queue, height, width)
    graphs = {}
    for graph in ("init", "step"):
        path = tmp / f"{graph}.onnx"
        export_onnx(graph_module(student, queue, graph), specs[graph], path)
        graphs[graph] = (path, specs[graph])
    if fp32_only:
        files = Conversion(graphs, tmp / "work", fp32_only=frozenset(graphs)).result()
        path = tmp / "model_fp32.tflite"
        path.write_bytes(merge_models({g: files[f"{g}_fp32"] for g in graphs}))
        return {path.name: path}
    return Conversion(graphs, tmp / "work", shipped=("init", "step")).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queues", default="1-20")
    parser.add_argument("--variants", default="all")
    parser.add_argument("--run-queues", default="1,2,20")
    parser.add_argument("--largest-only", action="store_true")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    run_queues = set(parse_queues(args.run_queues))
    if args.largest_only:
        print(f"# {height}x{width}: the largest tensor of the merged init + step model")
        print("| variant | queue | largest tensor | of 128 MiB | s |\n|---|---|---|---|---|")
    for name in variants if args.largest_only else ():
        student = build_student(get_variant(name).config)
        for queue in parse_queues(args.queues):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                files = _convert(student, queue, height, width, Path(tmp), fp32_only=True)
                size, tensor = largest_tensor(files["model_fp32.tflite"])
            print(f"| {name} | {queue} | {size / 2**20:.1f} MiB (`{tensor[:48]}`) | "
                  f"{100 * size / 2**27:.0f} % | {time.perf_counter() - start:.0f} |",
                  flush=True)
    if args.largest_only:
        return
    with GpuSession() as session, tempfile.TemporaryDirectory() as probe_dir:
        fp16 = computes_in_fp16(session, Path(probe_dir))  # also selects the adapter
        device = session.adapter.describe() if session.adapter else "no Vulkan device"
    print(f"# {height}x{width}; LiteRT GPU accelerator on {device} (fp16 compute "
          f"{'available' if fp16 else 'not available'}); TensorFlow 2.17.1 analyzer")
    print("| variant | queue | LiteRT GPU (fp16 init + step) | refused ops | "
          "TF 2.17 analyzer (2 models) | flagged | largest tensor | "
          "GPU vs CPU, one step | GPU step s | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        student = build_student(get_variant(name).config)
        for queue in parse_queues(args.queues):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                specs = graph_specs(student, queue, height, width)
                files = _convert(student, queue, height, width, Path(tmp))
                models = [files[f"model_{p}.tflite"] for p in ("fp32", "fp16")]
                reports = check_gpu(models)
                # a worker per point: a software device's buffers are host memory, and
                # a worker that has compiled many large graphs holds on to gigabytes
                with GpuSession() as session:
                    loads = {"model_fp16": session.load("model_fp16", models[1])}
                    err, gpu_s = (gpu_vs_cpu(session, models[1], specs["step"])
                                  if queue in run_queues else (None, None))
                size, tensor = largest_tensor(models[1])
            flagged = sorted({f"{n}: {f.op}" for n, r in reports.items()
                              for f in r.flagged})
            refused = sorted({f"{g}: {u['op']}" for g, r in loads.items()
                              for u in r.unsupported})
            full = all(r.fully_accelerated for r in loads.values())
            ok = all(r.compatible for r in reports.values())
            print(f"| {name} | {queue} | {'fully accelerated' if full else 'NOT FULLY'} | "
                  f"{', '.join(refused) or '-'} | "
                  f"{'compatible' if ok else 'INCOMPATIBLE'} | {', '.join(flagged) or '-'} | "
                  f"{size / 2**20:.1f} MiB (`{tensor[:40]}`) | "
                  f"{'-' if err is None else f'{err:.1e}'} | "
                  f"{'-' if gpu_s is None else f'{gpu_s:.1f}'} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
