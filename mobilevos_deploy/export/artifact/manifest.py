"""What an export folder promises: its I/O spec, files, tools and gate figures.

Also the check that every written artifact is usable: the ONNX checker on each ONNX file,
and for each TFLite model a fresh interpreter that invokes every signature once.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import numpy as np
import onnx

from ...files import sha256
from ...model.graphs import NEXT, GraphSpec
from ...runtime.runners import tflite_shape

MANIFEST = "manifest.json"
SCHEMA = 1
TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnx2tf", "tensorflow", "ai-edge-litert",
         "numpy")


def tool_versions() -> dict[str, str]:
    return {t: md.version(t) for t in TOOLS}


def io_spec(spec: GraphSpec) -> dict:
    """Every tensor with its ONNX (NCHW) and TFLite (4-D as NHWC, state as is) form."""

    def one(t):
        return {"name": t.name, "dtype": t.dtype,
                "onnx": {"shape": list(t.shape), "layout": t.layout},
                "tflite": {"shape": list(tflite_shape(t.shape)),
                           "layout": "NHWC" if len(t.shape) == 4 else t.layout}}

    return {"inputs": [one(t) for t in spec.inputs], "outputs": [one(t) for t in spec.outputs]}


def feeds(step: GraphSpec) -> dict[str, str]:
    """Which step output feeds which step input on the next frame."""
    return {NEXT + name: name for name in step.input_names[1:]}


def file_table(folder: Path) -> dict[str, dict]:
    return {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def models(folder: Path, weight_bytes_fp16: int) -> dict[str, dict]:
    """Each TFLite model's signature keys (its graphs, in subgraph order), bytes, and bytes
    against the student's weights stored as fp16 (``weight_bytes_fp16``): the share of a
    file that is not one copy of the weights."""
    from ..build.merge import signature_keys

    return {p.name: {"signatures": signature_keys(p), "bytes": p.stat().st_size,
                     "vs_fp16_weights": p.stat().st_size / weight_bytes_fp16}
            for p in sorted(folder.glob("*.tflite"))}


def verify_written(folder: Path, specs: dict[str, GraphSpec], graphs: list[str]) -> None:
    """Raise if any written ONNX or TFLite file fails to check, load or invoke, or a model
    lacks one of ``graphs`` among its signatures."""
    from ai_edge_litert.interpreter import Interpreter

    for path in sorted(folder.glob("*.onnx")):
        onnx.checker.check_model(str(path), full_check=True)
    for path in sorted(folder.glob("*.tflite")):
        interpreter = Interpreter(model_path=str(path))
        keys = list(interpreter.get_signature_list())
        if keys != list(graphs):
            raise RuntimeError(f"{path.name}: signatures {keys}, expected {list(graphs)}")
        for key in keys:
            spec = specs[key]
            runner = interpreter.get_signature_runner(key)
            outs = runner(**{t.name: np.zeros(tflite_shape(t.shape), np.float32)
                             for t in spec.inputs})
            missing = set(spec.output_names) - set(outs)
            if missing:
                raise RuntimeError(f"{path.name}: {key} returned no {sorted(missing)}")
