"""GPU-delegate compatibility of TFLite files, with TensorFlow 2.17's analyzer.

TensorFlow 2.19's ``Analyzer.analyze(gpu_compatibility=True)`` approves any model (it said
"looks compatible" for one full of TOPK_V2, WHERE and ARG_MAX); 2.17.1's flags them. So the
analyzer runs in a separate interpreter with TensorFlow 2.17 (``make gpu-venv`` builds
``.venv-gpucheck``; ``MVOS_GPU_CHECKER`` may name another python), and its report is parsed
here, op by op.

One pattern is recognised instead of flagged: an fp16-weight model feeds each convolution
its weights through ``DEQUANTIZE`` of a constant FLOAT16 tensor, which the offline analyzer
counts as extra runtime inputs ("Expected 1 or 2 input tensor(s), but node has 3 runtime
inputs"; for the fp16 pad value of PADV2, "Expected 1 runtime input tensor(s), but node
has 2"). The real GPU delegate folds that pattern (FP16GraphPartitionHelper in
``tensorflow/lite/delegates/utils.h`` remaps such inputs of every node to the fp16
constants), so such a warning is exempt when removing the dequantized fp16 constants brings
the runtime inputs within the op's limit. Any other warning, on any op, is a failure.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError
from ...proc import child_setup
from ...runtime.venv import ENV_VAR, checker_python
from .parity import GateError

MARK = "MVOS_GPU_REPORT "
FIX = ("run `make gpu-venv` (a separate venv with tensorflow-cpu 2.17.1 and ai-edge-litert "
       f"2.3) or set {ENV_VAR}=/path/to/python with TensorFlow 2.17")

# Runs under the checker's python, which has TensorFlow 2.17 and nothing of this package.
_SCRIPT = f"""
import contextlib, io, json, sys
import tensorflow as tf
reports = {{}}
for path in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_path=path, gpu_compatibility=True)
    reports[path] = buf.getvalue()
print({MARK!r} + json.dumps({{"tensorflow": tf.__version__, "reports": reports}}))
"""

_SUBGRAPH = re.compile(r"^Subgraph#(\d+) (\S+?)\(")
_OP = re.compile(r"^\s*Op#(\d+) (\w+)\((.*)\) -> \[(.*)\]")
_TENSOR = re.compile(r"^\s*T#([\d_]+)\(.*?\) shape:\[.*?\], type:(\w+)( RO)?")
_WARNING = "GPU COMPATIBILITY WARNING: "
_SUMMARY = re.compile(r"Subgraph#(\d+) has GPU delegate compatibility issues at nodes ([\d, ]+)")
_INPUT_COUNT = re.compile(r"Expected (\d+)(?: or (\d+))? (?:runtime )?input tensor\(s\), "
                          r"but node has (\d+) runtime input")
_COMPATIBLE = "looks compatible with GPU delegate"


@dataclass(frozen=True)
class FlaggedOp:
    index: int
    op: str
    message: str
    subgraph: str = ""  # its signature's name (a multi-signature model), or its number

    def where(self) -> str:
        return f"{self.subgraph} op #{self.index}" if self.subgraph else f"op #{self.index}"


@dataclass
class GpuReport:
    file: str
    compatible: bool
    flagged: list[FlaggedOp] = field(default_factory=list)
    exempt_fp16_dequantize: int = 0  # ops whose only warning is the fp16-weight pattern

    def to_dict(self) -> dict:
        return {"compatible": self.compatible, "exempt_fp16_dequantize":
                self.exempt_fp16_dequantize, "flagged": [
                    {"subgraph": f.subgraph, "op_index": f.index, "op": f.op,
                     "message": f.message} for f in self.flagged]}


def _tensor_ids(text: str) -> list[str]:
    """Tensor ids as the report writes them: ``T#5`` in subgraph 0, ``T#1_130`` after."""
    return re.findall(r"T#([\d_]+)", text)


def parse_report(file: str, text: str) -> GpuReport:
    """Turn one analyzer report into the ops it flags, minus the fp16 DEQUANTIZE pattern.
    A model of several subgraphs (signatures) is reported subgraph by subgraph; an op is
    known by its subgraph and its index there."""
    Key = tuple[int, int]
    ops: dict[Key, tuple[str, list[str], list[str]]] = {}
    warnings: dict[Key, list[str]] = {}
    const_fp16: set[str] = set()
    summary: list[Key] = []
    names: dict[int, str] = {}
    subgraph, last = 0, None
    for line in text.splitlines():
        if m := _SUBGRAPH.match(line):
            subgraph = int(m[1])
            names[subgraph] = m[2]
        elif m := _OP.match(line):
            last = (subgraph, int(m[1]))
            ops[last] = (m[2], _tensor_ids(m[3]), _tensor_ids(m[4]))
        elif m := _TENSOR.match(line):
            if m[2] == "FLOAT16" and m[3]:
                const_fp16.add(m[1])
        elif _WARNING in line:
            message = line.split(_WARNING, 1)[1].strip()
            if s := _SUMMARY.search(message):
                summary += [(int(s[1]), int(n)) for n in s[2].replace(" ", "").split(",") if n]
            elif last is not None:
                warnings.setdefault(last, []).append(message)
    if not summary and _COMPATIBLE not in text:
        raise UserError(f"the GPU checker gave no verdict for {file}; its report ends:\n"
                        + "\n".join(text.splitlines()[-5:]))
    dequantized = {outs[0] for name, ins, outs in ops.values()
                   if name == "DEQUANTIZE" and len(ins) == 1 and ins[0] in const_fp16 and outs}
    several = len(names) > 1
    report = GpuReport(file, True)
    for key in sorted(set(warnings) | set(summary)):
        name, inputs, _ = ops.get(key, ("?", [], []))
        messages = warnings.get(key) or ["listed in the analyzer's summary"]
        if all(_fp16_weight_pattern(m, inputs, dequantized) for m in messages):
            report.exempt_fp16_dequantize += 1
            continue
        report.compatible = False
        where = names.get(key[0], str(key[0])) if several else ""
        report.flagged += [FlaggedOp(key[1], name, m, where) for m in messages]
    return report


def _fp16_weight_pattern(message: str, inputs: list[str], dequantized: set[str]) -> bool:
    m = _INPUT_COUNT.search(message)
    if not m:
        return False
    allowed, runtime = int(m[2] or m[1]), int(m[3])
    return runtime - sum(t in dequantized for t in inputs) <= allowed


TIMEOUT_S = 600


def check_gpu(files: list[Path], python: Path | None = None,
              by_path: bool = False) -> dict[str, GpuReport]:
    """Analyze each file with TensorFlow 2.17; keyed by file name (or by the path given)."""
    python = python or checker_python()
    if python is None or not python.exists():
        raise UserError(f"the GPU-delegate checker is not installed: {FIX}")
    try:
        proc = subprocess.run([str(python), "-c", _SCRIPT, *map(str, files)],
                              capture_output=True, text=True, timeout=TIMEOUT_S,
                              preexec_fn=child_setup())
    except subprocess.TimeoutExpired:
        raise UserError(f"the GPU-delegate checker did not finish within {TIMEOUT_S} s on "
                        f"{', '.join(Path(f).name for f in files)}") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-5:])
        raise UserError(f"the GPU-delegate checker {python} failed (exit {proc.returncode}):\n"
                        f"{tail}\nTo fix: {FIX}")
    result = json.loads(lines[-1][len(MARK) :])
    if not result["tensorflow"].startswith("2.17."):
        raise UserError(f"{python} has TensorFlow {result['tensorflow']}; only 2.17's analyzer "
                        f"is known to flag unsupported ops (2.19's approves any model). {FIX}")
    return {(p if by_path else Path(p).name): parse_report(Path(p).name, text)
            for p, text in result["reports"].items()}


def gpu_delegate_gate(files: list[Path], allow_cpu_fallback: bool, warnings: list[str]
                      ) -> tuple[dict[str, GpuReport] | None, dict]:
    """The export's ``gpu_delegate`` gate: the analyzer on every shipped file. Returns the
    reports (None when the analyzer could not run and that was allowed) and the manifest
    entry; raises GateError for a flagged op unless ``allow_cpu_fallback``."""
    try:
        reports = check_gpu(files)
    except UserError as exc:
        if not allow_cpu_fallback:
            raise
        warnings.append(f"GPU-delegate check not run: {exc}")
        return None, {"verdict": "not checked", "reason": str(exc)}
    bad = {name: r for name, r in reports.items() if not r.compatible}
    verdict = "compatible" if not bad else "incompatible"
    if bad:
        rows = "\n".join(f"  gpu_delegate  {name:<18} {f.where()} {f.op}: {f.message}"
                         for name, r in bad.items() for f in r.flagged)
        if not allow_cpu_fallback:
            raise GateError(f"TFLite ops the GPU delegate does not support (they would run on "
                            f"the CPU); nothing was written:\n{rows}\nPass "
                            f"--allow-cpu-fallback to export anyway.")
        warnings.append(f"WARNING: these ops will fall back to the CPU on the phone:\n{rows}")
        verdict = "incompatible (exported with --allow-cpu-fallback)"
    return reports, {"verdict": verdict, "checker": "tf.lite.experimental.Analyzer "
                     "(TensorFlow 2.17), fp16-weight DEQUANTIZE pattern recognised",
                     "files": {n: r.to_dict() for n, r in reports.items()}}
