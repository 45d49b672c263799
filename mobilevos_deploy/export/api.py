"""export_model: one (variant, queue, size) → ONNX + TFLite fp32/fp16, gated, with a manifest.

Everything is built in a staging folder beside the target and moved into place only when
every gate passed, so a failed or interrupted export leaves no partial artifacts and a
rerun replaces the old folder whole.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..student import Student
from .convert import convert_graphs
from .graphs import NEXT, GraphSpec, export_onnx, graph_module, graph_specs
from .parity import GateResult, nchw_clip, rollout, rollout_gate, step_parity
from .runtimes import check_io, onnx_runner, tflite_runner, tflite_shape, torch_runner

ROLLOUT_FRAMES = 31
TOOLS = ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy")


class GateError(UserError):
    """An export gate failed; the message holds the table of offending tensors."""


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: dict
    gates: list[GateResult]
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tflite_layout(shape: tuple[int, ...], layout: str) -> dict:
    return {"shape": list(tflite_shape(shape)), "layout": "NHWC" if len(shape) == 4 else layout}


def _io_spec(spec: GraphSpec) -> dict:
    def one(t):
        return {"name": t.name, "dtype": t.dtype, "onnx": {"shape": list(t.shape),
                "layout": t.layout}, "tflite": _tflite_layout(t.shape, t.layout)}

    return {"inputs": [one(t) for t in spec.inputs], "outputs": [one(t) for t in spec.outputs]}


def _gates(student: Student, queue: int, specs: dict[str, GraphSpec], files: dict[str, Path],
           height: int, width: int) -> list[GateResult]:
    frames, masks = nchw_clip(ROLLOUT_FRAMES, height, width, seed=1)
    init_t = torch_runner(graph_module(student, queue, "init"), specs["init"])
    probe_t = torch_runner(graph_module(student, queue, "probe"), specs["probe"])
    step_t = torch_runner(graph_module(student, queue, "step"), specs["step"])
    state_names = specs["step"].input_names[1:]

    # a realistic state: memory filled by a few steps of the clip
    out = init_t({"frame": frames[:1], "mask": masks[:1, None]})
    state = {n: out[n] for n in state_names}
    for t in range(1, 4):
        out = step_t({"frame": frames[t : t + 1], **state})
        state = {n: out[NEXT + n] for n in state_names}
    inputs = {"frame": frames[4:5], **state}
    gates = [step_parity(specs["probe"], probe_t, {
        "onnx": onnx_runner(files["probe.onnx"], specs["probe"]),
        "tflite32": tflite_runner(files["probe_fp32"], specs["probe"]),
    }, inputs)]

    # the prediction must depend on memory, or the gates below could not see a memory bug
    blank = dict(inputs, mem_values=np.zeros_like(inputs["mem_values"]))
    moved = float(np.max(np.abs(probe_t(blank)["prob"] - probe_t(inputs)["prob"])))
    dep = GateResult("memory_dependence", moved > 1e-2, {"max_prob_change": moved})
    if not dep.passed:
        dep.offending.append(f"zeroing mem_values moved prob by only {moved:.3g} (need > 0.01)")
    gates.append(dep)

    ref = rollout(init_t, step_t, specs["step"], frames, masks[0])
    runs = {
        ("onnx", 0.999, 1e-3): (onnx_runner(files["init.onnx"], specs["init"]),
                                onnx_runner(files["step.onnx"], specs["step"])),
        ("tflite_fp32", 0.999, 1e-3): (tflite_runner(files["init_fp32.tflite"], specs["init"]),
                                       tflite_runner(files["step_fp32.tflite"], specs["step"])),
        ("tflite_fp16", 0.99, None): (tflite_runner(files["init_fp16.tflite"], specs["init"]),
                                      tflite_runner(files["step_fp16.tflite"], specs["step"])),
    }
    for (name, min_iou, max_err), (init_r, step_r) in runs.items():
        probs = rollout(init_r, step_r, specs["step"], frames, masks[0])
        gates.append(rollout_gate(f"rollout_{name}", ref, probs, min_iou, max_err))
    return gates


def export_model(student: Student, variant: str, queue: int, height: int, width: int,
                 out_root: Path, trained: bool, checkpoint: Path | None = None) -> ExportResult:
    start = time.perf_counter()
    specs = graph_specs(student, queue, height, width)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_root))
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out_root}: {exc.strerror}. "
                        "Choose another --out.") from None
    final = out_root / f"{variant}_q{queue}_{height}x{width}"
    try:
        work = staging / ".work"
        work.mkdir()
        graphs = {}
        for name in ("init", "step", "probe"):
            onnx_path = (staging if name != "probe" else work) / f"{name}.onnx"
            export_onnx(graph_module(student, queue, name), specs[name], onnx_path)
            graphs[name] = (onnx_path, specs[name])
        files: dict[str, Path] = {f"{n}.onnx": p for n, (p, _) in graphs.items()}
        for key, path in convert_graphs(graphs, work).items():
            name = key.split("_")[0]
            if name == "probe":
                files[key] = path
                continue
            shipped = staging / f"{key}.tflite"
            shutil.copyfile(path, shipped)
            check_io(shipped, specs[name])
            files[shipped.name] = shipped
        gates = _gates(student, queue, specs, files, height, width)
        failed = [g for g in gates if not g.passed]
        if failed:
            rows = "\n".join(f"  {g.name:<20} {row}" for g in failed for row in g.offending)
            raise GateError(f"export of {variant} queue {queue} at {height}x{width} failed "
                            f"{len(failed)} gate(s); nothing was written:\n{rows}")
        shutil.rmtree(work)
        manifest = {
            "variant": variant,
            "queue": queue,
            "size": [height, width],
            "precisions": ["fp32", "fp16"],
            "trained": trained,
            "checkpoint": None if checkpoint is None else
                {"path": str(checkpoint), "sha256": _sha256(checkpoint)},
            "config": student.config.to_dict(),
            "graphs": {n: _io_spec(specs[n]) for n in ("init", "step")},
            "feeds": {NEXT + n: n for n in specs["step"].input_names[1:]},
            "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
                      for p in sorted(staging.iterdir()) if p.is_file()},
            "tools": {t: md.version(t) for t in TOOLS},
            "gates": {g.name: {"passed": g.passed, **g.figures} for g in gates},
            "gpu_check": {"verdict": "not run", "reason": "GPU-delegate checker not built yet"},
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(final, manifest, gates, time.perf_counter() - start)


def _swap_into_place(staging: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
