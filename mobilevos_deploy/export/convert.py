"""onnx2tf, run in a subprocess, offline, with its failure surfaced as a UserError."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..stages import STATE_NAMES

# onnx2tf downloads this sample for image-only models unless it finds it in the cwd.
CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"
TIMEOUT_S = 900


def onnx2tf(onnx_path: Path, work: Path) -> dict[str, Path]:
    """Convert; returns {"fp32": path, "fp16": path} inside ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / CALIBRATION, np.random.default_rng(0).random((20, 128, 128, 3), np.float32))
    out = work / "saved_model"
    keep = list(STATE_NAMES)  # 3-D state inputs keep their layout on input and output
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path.resolve()), "-o", str(out),
           "-n", "-kat", *keep]
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"onnx2tf did not finish converting {onnx_path.name} within "
                        f"{TIMEOUT_S} s") from None
    stem = onnx_path.stem
    result = {"fp32": out / f"{stem}_float32.tflite", "fp16": out / f"{stem}_float16.tflite"}
    if proc.returncode != 0 or not all(p.exists() for p in result.values()):
        log = proc.stdout + proc.stderr
        lines = [ln for ln in log.splitlines() if "rror" in ln] or log.splitlines()
        detail = "\n".join(lines[-8:])
        if "ConnectionError" in log or "urlopen" in log:
            detail += "\n(onnx2tf tried to download something; this machine is offline)"
        shutil.rmtree(out, ignore_errors=True)
        raise UserError(
            f"onnx2tf failed converting {onnx_path.name} (exit {proc.returncode}):\n{detail}\n"
            f"Command: {' '.join(cmd)}"
        )
    return result
