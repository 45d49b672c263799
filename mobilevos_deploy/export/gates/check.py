"""check_tflite: does a TFLite file run entirely on a phone GPU? Two independent verdicts.

- LiteRT's own GPU accelerator (``runtime/gpu.py``) compiles the file for the GPU alone and
  either takes the whole graph or names the ops it refuses: the real delegate's verdict,
  on whatever Vulkan device is present (a software one here).
- TensorFlow 2.17's analyzer (``gpu_check.py``) encodes the classic TFLite GPU delegate's
  rules, which ``benchmark_model --use_gpu`` on the phone applies.

Any file, ours or a user's. A file both call fully GPU-runnable passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ...runtime.gpu import Adapter, GpuSession, LoadReport, largest_tensor
from .analyzer import GpuReport, check_gpu

TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class FileVerdict:
    path: Path
    accelerator: LoadReport
    analyzer: GpuReport

    @property
    def passed(self) -> bool:
        return self.accelerator.fully_accelerated and self.analyzer.compatible


@dataclass(frozen=True)
class CheckResult:
    files: list[FileVerdict]
    adapter: Adapter | None

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.files)


def _readable(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"{path}: not a regular file; give a .tflite file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}); give a .tflite file") \
            from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise UserError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); give a "
                        ".tflite file, as written by mvos-export or TensorFlow's converter")
    _complete(path)


def _complete(path: Path) -> None:
    """Every table and buffer of the flatbuffer lies inside the file. A truncated or
    damaged file would crash the interpreters the checkers run (a segmentation fault),
    which said nothing of the file."""
    from ai_edge_litert import schema_py_generated as fb

    data = path.read_bytes()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
        outside = [b for b in model.buffers or []
                   if (b.offset or 0) > 1 and b.offset + (b.size or 0) > len(data)]
    except Exception as exc:  # the schema's reader fails as struct or index errors
        raise UserError(f"{path}: a damaged TFLite file (its flatbuffer reaches past its "
                        f"{len(data)} bytes: {type(exc).__name__}); truncated in a copy? "
                        "Copy or export it again") from None
    if outside:
        raise UserError(f"{path}: a damaged TFLite file ({len(outside)} constant buffer(s) "
                        f"lie past its {len(data)} bytes); truncated in a copy? Copy or "
                        "export it again")


def check_tflite(paths: list[Path]) -> CheckResult:
    """Both verdicts for every file; a UserError for unreadable input or missing tools."""
    if not paths:
        raise UserError("give at least one .tflite file")
    for p in paths:
        _readable(p)
    analyzer = check_gpu(paths, by_path=True)
    verdicts = []
    with GpuSession() as session:
        for i, p in enumerate(paths):
            report = session.load(f"file{i}", p)
            if not report.fully_accelerated and not report.unsupported and \
                    "RESOURCE_EXHAUSTED" not in (report.error or ""):
                raise UserError(f"{p}: LiteRT could not load it for the GPU: {report.error}")
            verdicts.append(FileVerdict(p, report, analyzer[str(p)]))
        adapter = session.adapter
    return CheckResult(verdicts, adapter)


def format_result(result: CheckResult) -> str:
    device = result.adapter.describe() if result.adapter else "no device"
    lines = []
    for f in result.files:
        a, t = f.accelerator, f.analyzer
        lines.append(f"{f.path}: {'GPU OK' if f.passed else 'NOT FULLY ON THE GPU'}")
        lines.append(f"  LiteRT GPU accelerator on {device}: "
                     + ("fully accelerated" if a.fully_accelerated else "refused"))
        lines += [f"    {u['op']}: {u['reason']}" for u in a.unsupported]
        if not a.fully_accelerated and not a.unsupported and a.error:
            lines.append(f"    {a.error}")
        size, name = largest_tensor(f.path)
        lines.append(f"  largest tensor {size / 2**20:.1f} MiB ({name}): a device whose largest "
                     "GPU allocation is smaller refuses the graph")
        exempt = (f" ({t.exempt_fp16_dequantize} fp16-weight DEQUANTIZE warnings recognised)"
                  if t.exempt_fp16_dequantize else "")
        lines.append("  TensorFlow 2.17 analyzer: "
                     + ("compatible" if t.compatible else "incompatible") + exempt)
        lines += [f"    {g.where()} {g.op}: {g.message}" for g in t.flagged]
    return "\n".join(lines)
