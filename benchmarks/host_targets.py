"""The host performance figures, measured side by side in one run.

    python benchmarks/host_targets.py [--size 480x864] [--variants all] [--runs 20]

1. Step latency at queue 2 for TFLite (LiteRT/XNNPACK, fp32 file), ONNX Runtime and
   PyTorch eager, 2 threads each, every engine in its own process, measured in the same run;
   prints the TFLite/PyTorch and TFLite/ORT ratios (targets <= 0.5 and <= 0.75).
2. At queue 20: the TFLite step's sustained fraction of this machine's fp32 GEMM ceiling
   (2 x MACs per step from mvos-info / latency / ceiling; target >= 60 %), the ceiling
   measured in the same run with numpy (OpenBLAS, 2 threads) in child processes, each
   printing the OpenBLAS core type that ran (see ``gemm_ceiling``).
3. Peak resident memory of the host TFLite step at queue 20 next to the affinity size
   mvos-info predicts.
Exports are made on demand in export/ (reused when present), with every gate.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402

# Set in this machine's environment (the shared ENVIRONMENT.md notes): they pin OpenBLAS to
# its AVX2 kernels and cap the ceiling near 200 GFLOP/s. Removed for the ceiling's children
# only; the script's other children and the tests keep them.
PINNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Core types tried beside OpenBLAS's own detection, with the CPU flags their kernels need.
# Its detection is not enough: on this machine's "Intel(R) Xeon(R) Processor" (a CPU model
# OpenBLAS 0.3.23 does not know) it falls back to Prescott, SSE3 kernels, ~4x slower.
CORE_TYPES = {"Haswell": {"avx2", "fma"},
              "SkylakeX": {"avx512f", "avx512bw", "avx512dq", "avx512vl"}}
CORENAME_SYMBOLS = ("openblas_get_corename", "openblas_get_corename64_",
                    "scipy_openblas_get_corename64_", "scipy_openblas_get_corename")


@dataclass(frozen=True)
class Ceiling:
    gflops: float  # the best of the tries
    core: str  # the OpenBLAS core type that ran it, e.g. "SkylakeX"
    tries: list[tuple[str, str, float]]  # (asked for, core that ran, GFLOP/s)


def gemm_ceiling(threads: int = 2) -> Ceiling:
    """This machine's fp32 GEMM ceiling: the best over OpenBLAS's own detection and each
    core type the CPU's flags allow, each in a child process without ``PINNING``. A
    ceiling left on slower kernels than the CPU has would overstate every fraction of it."""
    flags = _cpu_flags()
    asked = [None, *(core for core, need in CORE_TYPES.items() if need <= flags)]
    tries = []
    for core in asked:
        got = _gemm_ceiling_in_child(core, threads)
        tries.append((core or "auto", got["core"], got["gflops"]))
    best = max(tries, key=lambda t: t[2])
    return Ceiling(best[2], best[1], tries)


def _gemm_ceiling_in_child(core: str | None, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    if core:
        env["OPENBLAS_CORETYPE"] = core
    proc = subprocess.run([sys.executable, __file__, "--gemm-ceiling-json"], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"GEMM ceiling child (core {core or 'auto'}) failed:\n"
                           + "\n".join(proc.stderr.strip().splitlines()[-5:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def openblas_core() -> str:
    """The core type of the OpenBLAS numpy loaded in this process, from OpenBLAS itself
    (``openblas_get_corename``, the call threadpoolctl's 'architecture' makes; threadpoolctl
    is not in this venv). Linux only: the library is found in /proc/self/maps."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    libs = dict.fromkeys(line.split()[-1] for line in maps
                         if "openblas" in line.rsplit("/", 1)[-1])
    for lib in libs:
        for symbol in CORENAME_SYMBOLS:
            corename = getattr(ctypes.CDLL(lib), symbol, None)
            if corename is not None:
                corename.restype = ctypes.c_char_p
                return corename().decode()
    return "unknown (no OpenBLAS corename found)"


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
    parser.add_argument("--gemm-ceiling-json", action="store_true",
                        help="print only this process's GEMM ceiling and OpenBLAS core type, "
                             "as JSON (what gemm_ceiling's children run)")
    args = parser.parse_args()
    if args.gemm_ceiling_json:
        print(json.dumps({"gflops": gemm_ceiling_gflops(), "core": openblas_core()}))
        return
    # here, not at the top: the ceiling's children run this file and need numpy alone
    from mobilevos_deploy.bench.api import ensure_export
    from mobilevos_deploy.bench.host import run_in_child
    from mobilevos_deploy.model.config import variant_names
    from mobilevos_deploy.model.profile import profile_variant

    h, w = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    found = gemm_ceiling()
    ceiling = found.gflops
    print(f"fp32 GEMM ceiling (numpy 2048^3, 2 threads, without {'/'.join(PINNING)}): "
          f"{ceiling:.1f} GFLOP/s on OpenBLAS core {found.core}; tried "
          + ", ".join(f"{asked} -> {ran} {g:.1f}" for asked, ran, g in found.tries))
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
