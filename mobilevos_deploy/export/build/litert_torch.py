"""PyTorch → one TFLite model per precision with litert-torch, the second converter.

litert-torch converts PyTorch directly (``torch.export`` and its own MLIR lowering, no
ONNX and no TensorFlow), and writes several graphs as signatures of one model. It needs
numpy 2 and ai-edge-litert 2.3, so it runs in its own venv (``make litert-torch-venv``),
in a child process (``litert_torch_worker.py``) that gets each graph as a ``torch.export``
program written here. Here, before that:

- each graph is wrapped so that its 4-D inputs and outputs are NHWC, as onnx2tf's are
  (the 3-D state stays as it is), and its outputs are a plain tuple (litert-torch cannot
  flatten the stages' NamedTuples);

and after it:

- the signatures' inputs and outputs, which litert-torch calls ``args_0``, ``output_0``,
  ..., take the graphs' names, and the tensors' long module paths are cut to their last
  part (half a megabyte of names at 64x96);
- the fp16 model is the fp32 one with every weight stored as float16 (fp16.py).

The gates then run on these files exactly as on onnx2tf's.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import torch
from torch import nn

from ...errors import UserError
from ...model.graphs import GraphSpec, tflite_file
from ...proc import child_setup
from ...runtime.runners import tflite_shape
from ...runtime.venv import LITERT_TORCH_VAR, litert_torch_python
from . import litert_torch_worker as worker
from .flatbuf import pack_model
from .fp16 import fp16_weights

TIMEOUT_S = 1800
FIX = (f"run `make litert-torch-venv` (litert-torch 0.10 in .venv-litert-torch, about 2 GB), "
       f"or set {LITERT_TORCH_VAR}=/path/to/python of such a venv")


class ChannelsLast(nn.Module):
    """A graph with NHWC 4-D inputs and outputs and a tuple of outputs."""

    def __init__(self, graph: nn.Module, spec: GraphSpec) -> None:
        super().__init__()
        self.inner = graph  # not "graph": the exported module's own fx graph has that name
        self.nhwc_in = [len(t.shape) == 4 for t in spec.inputs]
        self.nhwc_out = [len(t.shape) == 4 for t in spec.outputs]

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = tuple(x.permute(0, 3, 1, 2) if four else x
                     for x, four in zip(args, self.nhwc_in, strict=True))
        outs = self.inner(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return tuple(y.permute(0, 2, 3, 1) if four else y
                     for y, four in zip(outs, self.nhwc_out, strict=True))


class LitertTorchConversion:
    """A running conversion, as ``convert.Conversion``: ``result()`` waits for it and
    returns {"model_fp32.tflite": path, "model_fp16.tflite": path, "probe_fp32": path}."""

    def __init__(self, modules: dict[str, nn.Module], specs: dict[str, GraphSpec],
                 shipped: tuple[str, ...], work: Path) -> None:
        python = litert_torch_python()
        if python is None or not Path(python).exists():
            raise UserError(f"--converter litert-torch: the converter is not installed; {FIX}")
        self.specs, self.shipped, self.work = specs, shipped, work
        self.cpu_s: float | None = None
        self.versions: dict[str, str] = {}
        graphs = {}
        for name, module in modules.items():
            spec = specs[name]
            shapes = [list(tflite_shape(t.shape)) for t in spec.inputs]
            program = torch.export.export(ChannelsLast(module, spec).eval(),
                                          tuple(torch.zeros(s) for s in shapes))
            torch.export.save(program, work / f"{name}.pt2")
            graphs[name] = {"name": name, "pt2": str(work / f"{name}.pt2"), "shapes": shapes}
        self._raw = {"model": work / "litert_torch_fp32.tflite",
                     "probe": work / "litert_torch_probe.tflite"}
        jobs = [{"out": str(self._raw["model"]), "graphs": [graphs[g] for g in shipped]},
                {"out": str(self._raw["probe"]), "graphs": [graphs["probe"]]}]
        (work / "litert_torch_jobs.json").write_text(json.dumps(jobs, indent=1))
        self._log = open(work / "litert_torch.log", "w+")  # noqa: SIM115 (closed in result())
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._proc = subprocess.Popen(
            [str(python), str(Path(worker.__file__)), str(work / "litert_torch_jobs.json")],
            stdout=self._log, stderr=subprocess.STDOUT, text=True, preexec_fn=child_setup())

    def result(self) -> dict[str, Path]:
        try:
            rc = self._proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise UserError(f"litert-torch did not finish within {TIMEOUT_S} s") from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = ((after.ru_utime + after.ru_stime)
                      - (self._before.ru_utime + self._before.ru_stime))
        self._log.seek(0)
        log = self._log.read()
        self._log.close()
        lines = log.splitlines()
        found = [ln for ln in lines if ln.startswith(worker.VERSIONS)]
        if found:
            self.versions = json.loads(found[-1][len(worker.VERSIONS):])
        if rc or not all(p.exists() for p in self._raw.values()):
            failed = [ln for ln in lines if ln.startswith(worker.FAILED)]
            detail = failed[-1][len(worker.FAILED) + 1 :] if failed else "\n".join(lines[-8:])
            raise UserError(f"litert-torch conversion failed (exit {rc}) at {detail}")
        fp32 = self.work / tflite_file("fp32")
        fp32.write_bytes(name_io(self._raw["model"].read_bytes(), self.specs))
        fp16 = self.work / tflite_file("fp16")
        fp16.write_bytes(fp16_weights(fp32.read_bytes()))
        probe = self.work / "probe_fp32.tflite"
        probe.write_bytes(name_io(self._raw["probe"].read_bytes(), self.specs))
        return {fp32.name: fp32, fp16.name: fp16, "probe_fp32": probe}

    def cancel(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if not self._log.closed:
            self._log.close()


def name_io(buf: bytes, specs: dict[str, GraphSpec]) -> bytes:
    """Each signature's inputs and outputs (``args_i``, ``output_i`` in order) named as
    its graph declares, the I/O tensors too; every other tensor's name cut to the last
    part of its module path."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    for sig in model.signatureDefs:
        key = sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) \
            else sig.signatureKey
        spec = specs[key]
        graph = model.subgraphs[sig.subgraphIndex]
        for tensor in graph.tensors:
            tensor.name = (tensor.name or b"").rsplit(b"/", 1)[-1][:80]
        for maps, names, prefix in ((sig.inputs, spec.input_names, "args_"),
                                    (sig.outputs, spec.output_names, "output_")):
            if len(maps) != len(names):
                raise UserError(f"litert-torch's {key} has {len(maps)} {prefix}* tensors, "
                                f"the graph declares {len(names)}")
            for entry in maps:
                label = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
                if not label.startswith(prefix):
                    raise UserError(f"litert-torch's {key}: unexpected I/O name {label!r}")
                name = names[int(label[len(prefix):])]
                entry.name = name
                graph.tensors[entry.tensorIndex].name = name.encode()
    return pack_model(model, len(buf))
