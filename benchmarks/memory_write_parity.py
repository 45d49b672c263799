"""Where a runtime's memory write differs from exact arithmetic: its own value path, or the
mask it predicted (the step-parity gate's two ways of judging ``next_mem_values``).

    python benchmarks/memory_write_parity.py [--ckpt FILE] [--size 480x864] [--queue 2]

The export's realistic step (memory filled by four frames of its generated clip) through
PyTorch fp32 and ONNX Runtime (the probe graph exported as mvos-export exports it), each
measured against the float64 step three ways, as max |x - ref| / (1 + |ref|):

  against float64          the unconditioned comparison (the gate before 2026-12-01)
  given its own prob       against the float64 step fed that runtime's own probability
                           where it writes memory (the gate now; runners.exact_given_prob)
  its prob's share         the float64 step given the runtime's probability against the
                           float64 step: what its probability error alone moves

and the probability's absolute error per band of the exact probability, which shows how a
runtime's sigmoid is accurate (relative to the value, or absolute), with each runtime's
sigmoid against the float64 sigmoid of its own logit (the gate's SIGMOID_ATOL check).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from mobilevos_deploy.export.build.onnx import export_onnx
from mobilevos_deploy.export.gates.parity import sigmoid64
from mobilevos_deploy.export.gates.reference import Reference
from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.graphs import graph_module
from mobilevos_deploy.runtime.runners import onnx_runner

BANDS = ((0.0, 1e-6), (1e-6, 1e-3), (1e-3, 0.999), (0.999, 1.0))


def _rel(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got - ref) / (1.0 + np.abs(ref))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="Default: the shipped student.")
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queue", type=int, default=2)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    chosen = student_for(args.ckpt, None)
    student, queue = chosen.student, args.queue
    ref = Reference(student, queue, h, w, False)
    specs, given = ref.specs, ref.exact_given_prob
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        export_onnx(graph_module(student, queue, "probe"), specs["probe"], path)
        ort = onnx_runner(path, specs["probe"])(ref.inputs)
    print(f"{chosen.label()}, queue {queue}, {h}x{w}: next_mem_values, "
          "max |x - ref| / (1 + |ref|)")
    print(f"{'runtime':<14} {'against float64':>16} {'given its own prob':>19} "
          f"{'its prob share':>15} {'mean against f64':>17}")
    exact = ref.exact["next_mem_values"]
    for name, outs in (("pytorch fp32", ref.expected), ("onnxruntime", ort)):
        own = given(ref.inputs, outs["prob"])["next_mem_values"]
        got = outs["next_mem_values"]
        print(f"{name:<14} {_rel(got, exact).max():>16.3g} {_rel(got, own).max():>19.3g} "
              f"{_rel(own, exact).max():>15.3g} {_rel(got, exact).mean():>17.3g}")
    print("\nprob: mean |x - float64| (max) per band of the float64 probability")
    p = ref.exact["prob"]
    for lo, hi in BANDS:
        band = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        errs = [np.abs(o["prob"] - p)[band] for o in (ref.expected, ort)]
        cells = [f"{e.mean():.2g} ({e.max():.2g})" for e in errs]
        label = f"[{lo:g}, {hi:g}{')' if hi < 1.0 else ']'}"
        print(f"  {label:<14} {int(band.sum()):>7} px   pytorch fp32 {cells[0]:<20} "
              f"onnxruntime {cells[1]}")
    own = [float(np.max(np.abs(o["prob"] - sigmoid64(o["logit"])))) for o in (ref.expected, ort)]
    print(f"prob vs the float64 sigmoid of its own logit, max abs: pytorch fp32 {own[0]:.2g}, "
          f"onnxruntime {own[1]:.2g}")


if __name__ == "__main__":
    main()
