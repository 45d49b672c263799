"""Time whole exports (ONNX, fp32 + fp16 TFLite, every gate) at the deployment size.

    python benchmarks/export_time.py [--ckpt FILE|seeded] [--variants mobilenetv2-noaspp]
                                     [--queues 2] [--size 480x864]

Without --ckpt: the trained default student (other variants: their seeded students). Prints
one row per (variant, queue): wall seconds per phase and in total, the CPU seconds of the
process and its children (the converters and the GPU worker) with their ratio to the wall
time, then each gate's wall seconds (the GPU gate's run beside the others) and both GPU
verdicts. The target is <= 120 s for the default student at 480x864, queue 2, on a 2-core
machine. Exports go to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
from pathlib import Path

import torch

from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.export.gates.parity import runtime_errors
from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.config import DEFAULT_VARIANT, variant_names

PHASES = ("onnx", "reference", "onnx_gates", "convert_wait", "tflite_gates", "gpu_wait",
          "total")


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queues", default="2")
    parser.add_argument("--variants", default=DEFAULT_VARIANT, help="a,b or all")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    queues = [int(q) for q in args.queues.split(",")]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {height}x{width}")
    print(f"| student | queue | {' | '.join(PHASES)} | CPU s | CPU / wall | GPU accelerator "
          "| GPU parity worst | analyzer |")
    print("|---|---|" + "---|" * (len(PHASES) + 5))
    gate_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            chosen = student_for(args.ckpt, name)
            for queue in queues:
                cpu = cpu_seconds()
                r = export_model(chosen, queue, height, width, Path(tmp) / f"{name}_{queue}")
                cpu = cpu_seconds() - cpu
                s, m = r.seconds, r.manifest
                worst = max(runtime_errors(m["gates"]["gpu_parity"]))
                print(f"| {chosen.label()} ({name}) | {queue} | "
                      + " | ".join(f"{s.get(p, 0.0):.1f}" for p in PHASES)
                      + f" | {cpu:.0f} | {cpu / s['total']:.2f} | {m['gpu_run']['verdict']} "
                      f"| {worst:.1e} | {m['gpu_check']['verdict']} |", flush=True)
                gate_rows.append((name, queue, m["seconds"]["gates"], m["seconds"]["cpu"]))
    for name, queue, gates, cpu in gate_rows:
        print(f"\n{name} queue {queue}, CPU seconds: " + ", ".join(
            f"{k} {v:.0f}" for k, v in cpu.items() if v is not None))
        print(f"{name} queue {queue}, wall seconds per gate:")
        for gate, seconds in sorted(gates.items(), key=lambda kv: -kv[1]):
            print(f"  {gate:<28} {seconds:6.1f}")


if __name__ == "__main__":
    main()
