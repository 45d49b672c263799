"""One benchmark point on a phone: push benchmark_model and the step model, run, parse.

The binary is the user's (TensorFlow publishes ``android_aarch64_benchmark_model``); it
and the model go to /data/local/tmp/mobilevos, skipped when the phone already has the
same bytes. A point that the GPU delegate did not run entirely is reported as partial,
with the op counts, and never mixed silently into the GPU curve.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .adb import REMOTE_DIR, Adb
from .parse import BenchmarkOutput, parse_benchmark_output

BINARY_ENV = "MVOS_BENCHMARK_MODEL"
REMOTE_BINARY = f"{REMOTE_DIR}/benchmark_model"


@dataclass(frozen=True)
class DeviceRun:
    output: BenchmarkOutput
    thermal_status: int | None  # Android's 0 (none) .. 6 (shutdown), when reported
    command: str
    log: str


def find_binary(path: str | None) -> Path:
    candidate = path or os.environ.get(BINARY_ENV)
    if not candidate:
        raise UserError("no benchmark_model binary: download TensorFlow's prebuilt "
                        "android_aarch64_benchmark_model (tensorflow.org/lite/performance/"
                        f"measurement) and pass --benchmark-binary PATH or set {BINARY_ENV}")
    binary = Path(candidate)
    if not binary.is_file():
        raise UserError(f"benchmark_model binary {binary} does not exist; pass "
                        f"--benchmark-binary PATH or set {BINARY_ENV}")
    return binary


def thermal_status(adb: Adb) -> int | None:
    result = adb.shell("dumpsys thermalservice 2>/dev/null | grep -m1 'Thermal Status'")
    m = re.search(r"Thermal Status:\s*(\d+)", result.output)
    return int(m[1]) if m else None


def run_point(adb: Adb, binary: Path, model: Path, remote_name: str, *, fp16: bool,
              runs: int, warmup: int, op_profile: bool = False,
              timeout_s: float = 600, signature: str | None = None) -> DeviceRun:
    """``signature``: the graph of a multi-signature model to time (benchmark_model's
    ``--signature_to_run_for_benchmark``)."""
    adb.push(binary, REMOTE_BINARY)
    adb.check(f"chmod 755 {REMOTE_BINARY}")
    remote_model = f"{REMOTE_DIR}/{remote_name}"
    adb.push(model, remote_model)
    args = [REMOTE_BINARY, f"--graph={remote_model}", "--use_gpu=true",
            f"--gpu_precision_loss_allowed={'true' if fp16 else 'false'}",
            f"--num_runs={runs}", f"--warmup_runs={warmup}",
            "--report_peak_memory_footprint=true"]
    if signature:
        args.append(f"--signature_to_run_for_benchmark={signature}")
    if op_profile:
        args.append("--enable_op_profiling=true")
    command = " ".join(shlex.quote(a) for a in args)
    thermal = thermal_status(adb)
    result = adb.shell(f"{command} 2>&1", timeout=timeout_s)
    output = parse_benchmark_output(result.output)
    if result.rc != 0 or not output.has_timings:
        tail = "\n".join(result.output.strip().splitlines()[-8:]) or "(nothing)"
        if result.rc != 0:
            raise UserError(f"benchmark_model failed on {adb.serial} (exit {result.rc}) for "
                            f"{model.name}:\n{tail}")
        raise UserError(f"benchmark_model ran on {adb.serial} (exit 0) for {model.name} but "
                        "printed no timings (\"Inference timings in us\"); is the pushed "
                        f"binary TensorFlow's benchmark_model? Its output ends:\n{tail}")
    return DeviceRun(output, thermal, command, result.output)
