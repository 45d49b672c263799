"""ONNX → TFLite fp32 + fp16 through onnx2tf, offline, in one TensorFlow subprocess.

TensorFlow is never imported into the calling process: ``tf_worker`` does the conversion
in a child, and its failure comes back as a UserError naming the graph and the step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..model.stages import STATE_NAMES
from ..proc import child_setup
from .graphs import GraphSpec
from .tf_worker import FAILED

# onnx2tf downloads this sample for image-only models unless it finds it in the cwd.
CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"
TIMEOUT_S = 1800


class Conversion:
    """A running conversion; ``result()`` waits for it. Started early, it overlaps with the
    PyTorch and ONNX Runtime gates (TensorFlow's converter runs mostly on one core)."""

    def __init__(self, graphs: dict[str, tuple[Path, GraphSpec]], work: Path,
                 fp32_only: frozenset[str] = frozenset()) -> None:
        """``fp32_only``: graphs whose fp16 file nobody needs (the gates' probe)."""
        jobs, self.files = [], {}
        for name, (onnx_path, spec) in graphs.items():
            out = work / name
            out.mkdir(parents=True, exist_ok=True)
            # onnx2tf runs onnxsim on its input file and writes it back in place: it gets a
            # copy, so the ONNX file that ships, and that ONNX Runtime's gates load while it
            # converts, is never rewritten under them (a gate once read it half-written)
            copy = out / onnx_path.name
            shutil.copyfile(onnx_path, copy)
            np.save(out / CALIBRATION, np.random.default_rng(0).random((20, 128, 128, 3),
                                                                       np.float32))
            keep = [n for n in spec.input_names if n in STATE_NAMES]  # 3-D state keeps layout
            precisions = ["fp32"] if name in fp32_only else ["fp32", "fp16"]
            jobs.append({"onnx": str(copy.resolve()), "out": str(out.resolve()),
                         "inputs": spec.input_names, "outputs": spec.output_names,
                         "keep": keep, "precisions": precisions})
            for precision in precisions:
                self.files[f"{name}_{precision}"] = out / f"{onnx_path.stem}_{precision}.tflite"
        (work / "jobs.json").write_text(json.dumps(jobs, indent=1))
        self._log = open(work / "convert.log", "w+")  # noqa: SIM115 (closed in result())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mobilevos_deploy.export.tf_worker", str(work / "jobs.json")],
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
            preexec_fn=child_setup())

    def result(self) -> dict[str, Path]:
        """{"<name>_fp32": path, "<name>_fp16": path, ...}, or a UserError naming the step."""
        try:
            rc = self._proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise UserError(f"TFLite conversion did not finish within {TIMEOUT_S} s") from None
        self._log.seek(0)
        log = self._log.read()
        self._log.close()
        if rc != 0 or not all(p.exists() for p in self.files.values()):
            failed = [ln for ln in log.splitlines() if ln.startswith(FAILED)]
            detail = (failed[-1][len(FAILED) + 1 :] if failed
                      else "\n".join(log.splitlines()[-8:]))
            if "ConnectionError" in log or "urlopen" in log:
                detail += "\n(onnx2tf tried to download something; this machine is offline)"
            raise UserError(f"TFLite conversion failed (exit {rc}) at {detail}")
        return self.files

    def cancel(self) -> None:
        """Stop the worker if it still runs (an export failing or interrupted early)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def convert_graphs(graphs: dict[str, tuple[Path, GraphSpec]], work: Path) -> dict[str, Path]:
    """Convert each ONNX graph and wait; see Conversion."""
    return Conversion(graphs, work).result()
