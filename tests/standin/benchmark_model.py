"""Stand-in for TFLite's benchmark_model (tests only): runs the model with the host's
LiteRT interpreter and prints in the official tool's format. As the real tool, it runs the
signature ``--signature_to_run_for_benchmark`` names, and without that flag the first
subgraph. MVOS_FAKE_PARTIAL=1 makes it report a partial GPU delegation, as the real tool
does for unsupported ops. Each run's signature is logged to MVOS_STANDIN_LOG if set."""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main(argv: list[str]) -> None:
    flags = dict(a.lstrip("-").split("=", 1) for a in argv if "=" in a)
    start = time.perf_counter()
    interpreter = Interpreter(model_path=flags["graph"], num_threads=2)
    interpreter.allocate_tensors()
    init_us = (time.perf_counter() - start) * 1e6
    print("INFO: Initialized TensorFlow Lite runtime.")
    print("INFO: Created TensorFlow Lite delegate for GPU.")
    if os.environ.get("MVOS_FAKE_PARTIAL"):
        print("ERROR: Following operations are not supported by GPU delegate: ")
        print("TOPK_V2: Operation is not supported. ")
        print("12 operations will run on the GPU, and the remaining 3 operations will run on "
              "the CPU.")
    else:
        print("Explicitly applied GPU delegate, and the model graph will be completely "
              "executed by the delegate.")
    keys = list(interpreter.get_signature_list())
    key = flags.get("signature_to_run_for_benchmark", keys[0] if keys else "")
    if key not in keys:
        print(f"ERROR: Unable to find signature: {key}")
        sys.exit(1)
    print(f"INFO: Signature to run: [{key}]")
    runner = interpreter.get_signature_runner(key)
    feeds = {n: np.zeros(d["shape"], d["dtype"]) for n, d in runner.get_input_details().items()}
    if os.environ.get("MVOS_STANDIN_LOG"):
        with open(os.environ["MVOS_STANDIN_LOG"], "a") as log:
            log.write(key + "\n")

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            runner(**feeds)
            out.append((time.perf_counter() - t) * 1e6)
        return out

    def line(values: list[float]) -> str:
        return (f"count={len(values)} first={values[0]:.0f} curr={values[-1]:.0f} "
                f"min={min(values):.0f} max={max(values):.0f} "
                f"avg={statistics.fmean(values):g} std={statistics.pstdev(values):.0f}")

    warm = timed(max(int(flags.get("warmup_runs", 1)), 1))
    print(f"INFO: {line(warm)}")
    runs = timed(int(flags.get("num_runs", 50)))
    print(f"INFO: {line(runs)}")
    print(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: "
          f"{warm[0]:.0f}, Warmup (avg): {statistics.fmean(warm):g}, Inference (avg): "
          f"{statistics.fmean(runs):g}")
    print("INFO: Overall peak memory footprint (MB) via periodic monitoring: 42.5")


if __name__ == "__main__":
    main(sys.argv[1:])
