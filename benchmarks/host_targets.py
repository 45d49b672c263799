"""Issue 4's host performance figures, measured side by side in one run.

    python benchmarks/host_targets.py [--size 480x864] [--variants all] [--runs 20]

1. Step latency at queue 2 for TFLite (LiteRT/XNNPACK, fp32 file), ONNX Runtime and
   PyTorch eager, 2 threads each, every engine in its own process, measured in the same run;
   prints the TFLite/PyTorch and TFLite/ORT ratios (targets <= 0.5 and <= 0.75).
2. At queue 20: the TFLite step's sustained fraction of this machine's fp32 GEMM ceiling
   (2 x MACs per step from mvos-info / latency / ceiling; target >= 60 %), the ceiling
   measured in the same run with numpy (OpenBLAS, 2 threads).
3. Peak resident memory of the host TFLite step at queue 20 next to the affinity size
   mvos-info predicts.
Exports are made on demand in export/ (reused when present), with every gate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from mobilevos_deploy.bench.api import ensure_export  # noqa: E402
from mobilevos_deploy.bench.host import run_in_child  # noqa: E402
from mobilevos_deploy.config import variant_names  # noqa: E402
from mobilevos_deploy.profile import profile_variant  # noqa: E402


def gemm_ceiling_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--variants", default="all")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--exports", default="export")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    ceiling = gemm_ceiling_gflops()
    print(f"fp32 GEMM ceiling (numpy 2048^3, 2 threads): {ceiling:.1f} GFLOP/s")
    print("\n| variant | queue | TFLite ms | ORT ms | PyTorch ms | TFLite/PyTorch | TFLite/ORT |")
    print("|---|---|---|---|---|---|---|")
    for name in variants:
        folder, _ = ensure_export(name, 2, (h, w), None, Path(args.exports))
        med = {e: statistics.median(run_in_child(folder, e, "fp32", 2, 3, args.runs)["times_ms"])
               for e in ("tflite", "onnx", "torch")}
        print(f"| {name} | 2 | {med['tflite']:.1f} | {med['onnx']:.1f} | {med['torch']:.1f} | "
              f"{med['tflite'] / med['torch']:.2f} | {med['tflite'] / med['onnx']:.2f} |",
              flush=True)
    print("\n| variant | queue | TFLite ms | GMAC per step | GFLOP/s | of ceiling | "
          "peak RSS MB | affinity MB (mvos-info) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in variants:
        folder, _ = ensure_export(name, 20, (h, w), None, Path(args.exports))
        m = run_in_child(folder, "tflite", "fp32", 2, 3, args.runs)
        ms = statistics.median(m["times_ms"])
        p = profile_variant(name, h, w, 20)
        gflops = 2 * p.macs["total"] / (ms / 1e3) / 1e9
        print(f"| {name} | 20 | {ms:.1f} | {p.macs['total'] / 1e9:.2f} | {gflops:.1f} | "
              f"{100 * gflops / ceiling:.0f} % | {m['peak_memory_mb']:.0f} | "
              f"{p.affinity_bytes / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
