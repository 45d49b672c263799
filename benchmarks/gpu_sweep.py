"""GPU-delegate verdict for every variant, queue and precision (conversion + checker only).

    python benchmarks/gpu_sweep.py [--size 480x864] [--queues 1-20] [--variants all]

For each (variant, queue) the init and step graphs are exported to ONNX, converted to
TFLite fp32 and fp16 exactly as mvos-export does, and checked with TensorFlow 2.17's
analyzer. The parity gates are skipped (mvos-export runs them on every export); this
sweep only answers "does every file run entirely on the GPU delegate?".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mobilevos_deploy.cli import parse_queues
from mobilevos_deploy.config import get_variant, variant_names
from mobilevos_deploy.export.convert import convert_graphs
from mobilevos_deploy.export.gpu_check import check_gpu
from mobilevos_deploy.export.graphs import export_onnx, graph_module, graph_specs
from mobilevos_deploy.student import build_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queues", default="1-20")
    parser.add_argument("--variants", default="all")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    variants = variant_names() if args.variants == "all" else args.variants.split(",")
    print(f"# GPU-delegate check, {height}x{width}, TensorFlow 2.17.1 analyzer")
    print("| variant | queue | files | verdict | fp16 DEQUANTIZE ops recognised | flagged | s |")
    print("|---|---|---|---|---|---|---|")
    for name in variants:
        student = build_student(get_variant(name).config)
        for queue in parse_queues(args.queues):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                specs = graph_specs(student, queue, height, width)
                graphs = {}
                for graph in ("init", "step"):
                    path = Path(tmp) / f"{graph}.onnx"
                    export_onnx(graph_module(student, queue, graph), specs[graph], path)
                    graphs[graph] = (path, specs[graph])
                files = convert_graphs(graphs, Path(tmp) / "work")
                reports = check_gpu(list(files.values()))
            flagged = sorted({f"{n}: {f.op}" for n, r in reports.items() for f in r.flagged})
            ok = all(r.compatible for r in reports.values())
            print(f"| {name} | {queue} | {len(reports)} | "
                  f"{'compatible' if ok else 'INCOMPATIBLE'} | "
                  f"{sum(r.exempt_fp16_dequantize for r in reports.values())} | "
                  f"{', '.join(flagged) or '-'} | {time.perf_counter() - start:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
