"""Time whole exports (ONNX, fp32 + fp16 TFLite, every gate) at the deployment size.

    python benchmarks/export_time.py [--size 480x864] [--queues 2,20] [--variants all]

Prints one row per (variant, queue): seconds per phase and in total, the worst parity
figures and the GPU-delegate verdict. The target is <= 60 s per export on a 2-core machine.
Exports go to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from mobilevos_deploy.config import get_variant, variant_names
from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.student import build_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queues", default="2,20")
    parser.add_argument("--variants", default="all")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    queues = [int(q) for q in args.queues.split(",")]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {height}x{width}")
    print("| variant | queue | ONNX s | PyTorch + ORT gates s (TFLite converting) | "
          "wait for TFLite s | TFLite gates s | GPU check s | total s | fp16 min IoU | "
          "GPU delegate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            student = build_student(get_variant(name).config)
            for queue in queues:
                r = export_model(student, name, queue, height, width,
                                 Path(tmp) / f"{name}_{queue}", trained=False)
                s = r.seconds
                print(f"| {name} | {queue} | {s['onnx']:.1f} | {s['torch_onnx_gates']:.1f} | "
                      f"{s['convert_wait']:.1f} | {s['tflite_gates']:.1f} | "
                      f"{s['gpu_check']:.1f} | {s['total']:.1f} | "
                      f"{r.manifest['gates']['rollout_tflite_fp16']['min_iou']:.4f} | "
                      f"{r.manifest['gpu_check']['verdict']} |", flush=True)


if __name__ == "__main__":
    main()
