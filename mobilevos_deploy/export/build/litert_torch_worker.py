"""PyTorch → TFLite with litert-torch, in its own venv (run by ``litert_torch.py``).

    <litert-torch venv>/bin/python litert_torch_worker.py jobs.json

It imports nothing of this package: the graphs come as ``torch.export`` programs (``.pt2``)
written by the parent, each already in the runtimes' layouts with plain tuple outputs.
Each job is one model: its graphs become signatures of one file, in the order given, over
one set of weights (litert-torch stores a weight once however many signatures read it).

A failure prints one line ``MVOS_CONVERT_FAILED <model> <graph or step>: <message>`` to
stderr and exits 3. The versions it ran with are printed as ``MVOS_LITERT_TORCH {json}``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import traceback
from pathlib import Path

FAILED = "MVOS_CONVERT_FAILED"
VERSIONS = "MVOS_LITERT_TORCH "
# run as a script, its folder comes first on sys.path, where litert_torch.py (the parent's
# side) would hide the litert_torch package and onnx.py the onnx one
if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(
        __file__).resolve().parent:
    del sys.path[0]


def convert(job: dict) -> None:
    import litert_torch
    import torch

    converter = None
    for graph in job["graphs"]:
        program = torch.export.load(graph["pt2"])
        args = tuple(torch.zeros(shape) for shape in graph["shapes"])
        module = program.module()
        converter = (litert_torch.signature(graph["name"], module, args) if converter is None
                     else converter.signature(graph["name"], module, args))
    model = converter.convert()
    model.export(job["out"])


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    print(VERSIONS + json.dumps({p: md.version(p) for p in (
        "litert-torch", "torch", "ai-edge-litert")}), flush=True)
    for job in jobs:
        try:
            convert(job)
        except Exception as exc:  # report which model and step failed, then the traceback
            traceback.print_exc()
            message = " ".join(str(exc).split())[:600] or type(exc).__name__
            print(f"{FAILED} {Path(job['out']).name} {type(exc).__name__}: {message}",
                  file=sys.stderr)
            sys.exit(3)


if __name__ == "__main__":
    main()
