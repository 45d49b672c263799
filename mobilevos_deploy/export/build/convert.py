"""ONNX → TFLite fp32 + fp16 through onnx2tf, offline, in TensorFlow subprocesses; then
each precision's shipped graphs merged into one model (merge.py).

TensorFlow is never imported into the calling process: ``tf_worker`` does the conversion
in a child, and its failure comes back as a UserError naming the graph and the step.

More than ``PER_WORKER`` graphs (an export with the K-object graphs: seven) are shared out
between two children. onnx2tf runs a graph on about one core, and such an export's
conversion was its critical path: at 64x96, 48 s of conversion beside 20 s of PyTorch and
ONNX Runtime gates, 63.8 s in all; with two children 49.0 s. The single-object export's
three graphs stay in one child: with two it went from 38.6 to 43.9 s, its gates then
competing with two converters for the two cores.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...model.graphs import GraphSpec, tflite_file
from ...model.stages import STATE_NAMES
from ...proc import child_setup
from .merge import merge_models
from .tf_worker import FAILED

# onnx2tf downloads this sample for image-only models unless it finds it in the cwd.
CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"
TIMEOUT_S = 1800
PER_WORKER = 3


class Conversion:
    """A running conversion; ``result()`` waits for it. Started early, it overlaps with the
    PyTorch and ONNX Runtime gates (TensorFlow's converter runs mostly on one core)."""

    def __init__(self, graphs: dict[str, tuple[Path, GraphSpec]], work: Path,
                 fp32_only: frozenset[str] = frozenset(), shipped: tuple[str, ...] = ()
                 ) -> None:
        """``fp32_only``: graphs whose fp16 file nobody needs (the gates' probe).
        ``shipped``: the graphs merged, in this order, into ``model_fp32.tflite`` and
        ``model_fp16.tflite`` (graphs.tflite_file) once converted."""
        jobs, self.files, self.shipped, self.work = [], {}, shipped, work
        self.versions = {t: md.version(t) for t in ("onnx2tf", "tensorflow")}
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
        self._procs, self._logs = [], []
        self.cpu_s: float | None = None  # the workers' CPU seconds, once they have ended
        workers = 1 if len(jobs) <= PER_WORKER else 2
        for i in range(workers):
            share = jobs[i::workers]
            (work / f"jobs{i}.json").write_text(json.dumps(share, indent=1))
            log = open(work / f"convert{i}.log", "w+")  # noqa: SIM115 (closed in result())
            self._logs.append(log)
            self._procs.append(subprocess.Popen(
                [sys.executable, "-m", "mobilevos_deploy.export.build.tf_worker",
                 str(work / f"jobs{i}.json")],
                stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=child_setup()))

    def result(self) -> dict[str, Path]:
        """{"<name>_fp32": path, "<name>_fp16": path, ..., and the merged models by file
        name}, or a UserError naming the step."""
        rcs = []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            for proc in self._procs:
                rcs.append(proc.wait(timeout=TIMEOUT_S))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise UserError(f"TFLite conversion did not finish within {TIMEOUT_S} s") from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # the workers' CPU seconds (no other child of this process ends while they run)
        self.cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        logs = []
        for log in self._logs:
            log.seek(0)
            logs.append(log.read())
            log.close()
        if any(rcs) or not all(p.exists() for p in self.files.values()):
            rc, log = next(((r, text) for r, text in zip(rcs, logs, strict=True) if r),
                           (0, "\n".join(logs)))
            failed = [ln for ln in log.splitlines() if ln.startswith(FAILED)]
            detail = (failed[-1][len(FAILED) + 1 :] if failed
                      else "\n".join(log.splitlines()[-8:]))
            if "ConnectionError" in log or "urlopen" in log:
                detail += "\n(onnx2tf tried to download something; this machine is offline)"
            raise UserError(f"TFLite conversion failed (exit {rc}) at {detail}")
        files = dict(self.files)
        if self.shipped:
            for precision in ("fp32", "fp16"):
                path = self.work / tflite_file(precision)
                path.write_bytes(merge_models({g: files[f"{g}_{precision}"]
                                               for g in self.shipped}))
                files[path.name] = path
        return files

    def cancel(self) -> None:
        """Stop the workers that still run (an export failing or interrupted early)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def convert_graphs(graphs: dict[str, tuple[Path, GraphSpec]], work: Path) -> dict[str, Path]:
    """Convert each ONNX graph and wait; see Conversion."""
    return Conversion(graphs, work).result()
