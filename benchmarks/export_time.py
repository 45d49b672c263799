"""Time whole exports (ONNX, fp32 + fp16 TFLite, every gate) at the deployment size.

    python benchmarks/export_time.py [--size 480x864] [--queues 2,20] [--variants all]

Prints one row per (variant, queue): seconds per phase and in total, the fp16 gates' IoU,
and both GPU verdicts (LiteRT's accelerator, with its parity, and TF 2.17's analyzer). The
target is <= 60 s per export on a 2-core machine. Exports go to a temporary folder that is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.export.parity import runtime_errors
from mobilevos_deploy.model.config import get_variant, variant_names
from mobilevos_deploy.model.student import build_student


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
    print("| variant | queue | ONNX s | PyTorch + ORT + fp16-compute gates s (TFLite "
          "converting, then the GPU gate and analyzer) | wait for TFLite s | TFLite gates s | "
          "wait for GPU gate and analyzer s | total s | fp16-weight min IoU | fp16-compute "
          "min IoU | GPU accelerator | GPU parity worst | analyzer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            student = build_student(get_variant(name).config)
            for queue in queues:
                r = export_model(student, name, queue, height, width,
                                 Path(tmp) / f"{name}_{queue}", trained=False)
                s, g = r.seconds, r.manifest["gates"]
                worst = max(runtime_errors(g["gpu_parity"]))
                print(f"| {name} | {queue} | {s['onnx']:.1f} | {s['torch_onnx_gates']:.1f} | "
                      f"{s['convert_wait']:.1f} | {s['tflite_gates']:.1f} | "
                      f"{s['gpu_wait']:.1f} | {s['total']:.1f} | "
                      f"{g['rollout_tflite_fp16']['min_iou']:.4f} | "
                      f"{g['rollout_fp16_compute']['min_iou']:.4f} | "
                      f"{r.manifest['gpu_run']['verdict']} | {worst:.1e} | "
                      f"{r.manifest['gpu_check']['verdict']} |", flush=True)


if __name__ == "__main__":
    main()
