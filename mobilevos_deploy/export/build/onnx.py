"""A graph module → a static ONNX file (opset 17), its shape arithmetic folded."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnxsim
import torch
from torch import nn

from ...model.graphs import GraphSpec

OPSET = 17


def export_onnx(module: nn.Module, spec: GraphSpec, path: Path) -> None:
    """Trace ``module`` on zeros of the declared shapes; TracerWarning is an error here."""
    args = tuple(torch.zeros(t.shape) for t in spec.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module, args, str(path), input_names=spec.input_names,
            output_names=spec.output_names, opset_version=OPSET, dynamo=False,
            do_constant_folding=True,
        )
    # fold the shape arithmetic of the trace into constants: every size is static here
    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise RuntimeError(f"onnxsim could not validate the simplified {spec.name} graph")
    onnx.checker.check_model(model, full_check=True)
    left = sorted({n.op_type for n in model.graph.node} & {"Shape", "Gather", "Expand"})
    if left:
        raise RuntimeError(f"{spec.name} graph still has dynamic-shape ops {left}")
    onnx.save(model, str(path))
