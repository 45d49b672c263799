"""LiteRT's own GPU accelerator on TFLite files: the real delegation verdict, and runs.

ai-edge-litert 2.3 ships LiteRT's GPU accelerator (ML Drift over WebGPU/Dawn/Vulkan); it
cannot share a venv with onnx2tf (which pins ai-edge-litert 2.1), so it lives in the GPU
venv (``make gpu-venv``: ``.venv-gpucheck``, beside TensorFlow 2.17's analyzer;
``MVOS_GPU_CHECKER`` may name another python) and runs in ``gpu_worker.py``, a child
process this module talks to (``GpuSession``).

The Vulkan device is chosen once, here, for the child (``worker_env``):
  1. ``MVOS_VULKAN_ICD=/path/icd.json`` names a driver; ``MVOS_VULKAN_ICD=system`` (or a
     ``VK_ICD_FILENAMES`` / ``VK_DRIVER_FILES`` the user set) leaves the choice to the
     Vulkan loader, which picks up an installed GPU driver;
  2. otherwise the project's ``.vulkan/`` folder (``make vulkan``): SwiftShader, a software
     Vulkan device, with its loader, taken from Debian's ``chromium-common`` package;
  3. otherwise whatever the system's loader finds.
A software device runs the real GPU backend's kernels on the CPU: its verdicts and
numbers are the backend's, its latency is not a GPU's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..proc import child_setup
from . import gpu_worker as protocol
from .venv import ENV_VAR, checker_python

ROOT = Path(__file__).resolve().parents[2]
VULKAN_DIR = ROOT / ".vulkan"
SWIFTSHADER_ICD = VULKAN_DIR / "vk_swiftshader_icd.json"
ICD_VAR = "MVOS_VULKAN_ICD"
NO_DEVICE_FIX = (f"run `make vulkan` (a software Vulkan device, SwiftShader, from Debian's "
                 f"chromium-common package, into {VULKAN_DIR.name}/), or install your GPU's "
                 f"Vulkan driver and set {ICD_VAR}=system; --allow-cpu-fallback exports "
                 "without this check")
NO_VENV_FIX = (f"run `make gpu-venv` (ai-edge-litert 2.3 with TensorFlow 2.17, in "
               f".venv-gpucheck), or set {ENV_VAR}=/path/to/python of such a venv")
_NO_ADAPTER = ("No adapters found", "Failed to initialize WebGPU environment",
               "Couldn't load Vulkan")


@dataclass(frozen=True)
class Adapter:
    name: str
    backend: str
    type: str
    software: bool

    def describe(self) -> str:
        kind = "software device, not a GPU" if self.software else self.type
        return f"{self.name} ({self.backend}, {kind})"


@dataclass
class LoadReport:
    """One file compiled for the GPU accelerator."""

    file: str
    fully_accelerated: bool
    unsupported: list[dict] = field(default_factory=list)  # {"op", "reason"}
    error: str | None = None
    compile_s: float = 0.0
    signatures: list[str] = field(default_factory=list)


def worker_env() -> dict[str, str]:
    """The child's environment: the Vulkan driver to use (see the module docstring)."""
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    chosen = env.get(ICD_VAR, "")
    if chosen == "system" or (not chosen and ("VK_ICD_FILENAMES" in env
                                              or "VK_DRIVER_FILES" in env)):
        return env
    icd = Path(chosen) if chosen else SWIFTSHADER_ICD
    if chosen and not icd.is_file():
        raise UserError(f"{ICD_VAR}={chosen}: no such Vulkan driver file; {NO_DEVICE_FIX}")
    if icd.is_file():
        env["VK_ICD_FILENAMES"] = str(icd)
        if (icd.parent / "libvulkan.so.1").exists():  # the loader shipped beside it
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(icd.parent), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


class GpuSession:
    """A GPU worker process; use as a context manager.

    ``load`` compiles a file (GPU alone unless ``cpu_fallback``), ``run`` runs one step,
    ``time`` times repeated runs inside the worker. Inputs and outputs are dicts of arrays
    by signature name, in the TFLite file's own layouts (4-D as NHWC).
    """

    def __init__(self, python: Path | None = None, timeout_s: float = 900,
                 nice: int = 0) -> None:
        """``nice``: a lower CPU priority for the worker (a software device's runs are CPU
        work; the export's gate runs them beside the PyTorch gates, which come first)."""
        python = python or checker_python()
        if python is None or not Path(python).exists():
            raise UserError(f"LiteRT's GPU accelerator is not installed: {NO_VENV_FIX}")
        self.timeout_s = timeout_s
        self.adapter: Adapter | None = None
        self._log = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [str(python), "-u", str(Path(protocol.__file__))], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, env=worker_env(),
            preexec_fn=child_setup(nice))

    def __enter__(self) -> GpuSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                protocol.write_message(self._proc.stdin, {"op": "quit"})
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def cpu_seconds(self) -> float | None:
        """CPU seconds the worker has used so far (user + system; None off Linux or once it
        has ended). On a software device this is the GPU's work."""
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 6) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().splitlines()[-lines:])

    def _call(self, request: dict, arrays: dict[str, np.ndarray] | None = None
              ) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            protocol.write_message(self._proc.stdin, request, arrays)
            message = protocol.read_message(self._proc.stdout)
        except OSError:
            message = None
        if message is None:
            self._proc.kill()
            raise UserError(f"the GPU worker died (exit {self._proc.wait()}); its log ends:\n"
                            f"{self.log_tail()}")
        reply, out = message
        if "error" in reply and request["op"] != "load":
            raise UserError(f"the GPU worker failed on {request['op']} "
                            f"{request.get('name', '')}: {reply['error']}")
        return reply, out

    def load(self, name: str, file: Path, *, enforce_f32: bool = True,
             cpu_fallback: bool = False) -> LoadReport:
        reply, _ = self._call({"op": "load", "name": name, "file": str(Path(file).resolve()),
                               "enforce_f32": enforce_f32, "cpu_fallback": cpu_fallback})
        if reply.get("adapter"):
            a = reply["adapter"]
            self.adapter = Adapter(a["name"], a["backend"], a["type"], a["software"])
        error = reply.get("error")
        if error and not reply["unsupported"] and self.adapter is None:
            if any(s in self.log_tail(40) for s in _NO_ADAPTER):
                raise UserError(f"no Vulkan device for LiteRT's GPU accelerator: "
                                f"{NO_DEVICE_FIX}")
            raise UserError(f"LiteRT's GPU accelerator could not compile {Path(file).name}: "
                            f"{error}\n{self.log_tail()}")
        return LoadReport(Path(file).name, reply["fully_accelerated"], reply["unsupported"],
                          error, reply["compile_s"], list(reply.get("signatures", {})))

    def run(self, name: str, inputs: dict[str, np.ndarray],
            signature: str | None = None) -> dict[str, np.ndarray]:
        """One run of ``signature`` of the file loaded as ``name`` (None: its only one)."""
        return self._call({"op": "run", "name": name, "signature": signature}, inputs)[1]

    def time(self, name: str, inputs: dict[str, np.ndarray], warmup: int,
             runs: int, signature: str | None = None) -> dict:
        return self._call({"op": "time", "name": name, "signature": signature,
                           "warmup": warmup, "runs": runs}, inputs)[0]


    def stream_start(self, name: str, frame: np.ndarray, mask: np.ndarray) -> list[str]:
        """Start the one-object loop on the model loaded as ``name`` with its state kept on
        the accelerator (gpu_worker.py); returns the state's tensor names. NHWC arrays."""
        return self._call({"op": "stream_start", "name": name},
                          {"frame": frame, "mask": mask})[0]["state"]

    def stream_step(self, name: str, frame: np.ndarray) -> tuple[np.ndarray, dict]:
        """One step of that loop: the probability (NHWC), and the identities of the buffers
        the worker read back and of the state buffers the run used (``{"read": [...],
        "returned": ["prob"], "buffers": {"in": {...}, "out": {...}}}``)."""
        reply, out = self._call({"op": "stream_step", "name": name}, {"frame": frame})
        return out["prob"], reply

    def peak_memory_mb(self) -> float:
        """The worker's peak resident memory (a software device's buffers are host memory)."""
        return float(self._call({"op": "memory"})[0]["peak_memory_mb"])


def largest_tensor(path: Path) -> tuple[int, str]:
    """(bytes at fp32, "signature/tensor") of the largest tensor of a TFLite file, over
    every subgraph: what one GPU buffer must hold. LiteRT's accelerator refuses, at compile
    time, a tensor beyond the device's largest allocation (seen: "RESOURCE_EXHAUSTED:
    Requested allocation size - 1280000000 bytes. Max allocation size for this GPU -
    1073741824 bytes" on SwiftShader)."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = {}
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        names[sig.SubgraphIndex()] = sig.SignatureKey().decode()
    best = (0, "")
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            size = int(np.prod(tensor.ShapeAsNumpy())) * 4 if tensor.ShapeLength() else 4
            best = max(best, (size, f"{names.get(g, g)}/{tensor.Name().decode()}"))
    return best


def add_model(shape: tuple[int, ...] = (1, 1, 1, 4)) -> bytes:
    """A one-ADD TFLite model, z = x + y on float32 tensors of ``shape``: the fp16 probe,
    and (very large) a graph no device can allocate."""
    from ai_edge_litert import schema_py_generated as fb

    from ..export.build.flatbuf import pack_model, signature

    def tensor(name: str):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), fb.TensorType.FLOAT32, 0
        return t

    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = fb.BuiltinOperator.ADD, 0, 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
    graph = fb.SubGraphT()
    graph.tensors, graph.operators = [tensor("x"), tensor("y"), tensor("z")], [op]
    graph.inputs, graph.outputs = [0, 1], [2]
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [fb.BufferT()]
    model.signatureDefs = [signature(fb, "add", [("x", 0), ("y", 1)], [("z", 2)])]
    model.description = "mobilevos-deploy one-ADD model"
    return pack_model(model, 1024)


def computes_in_fp16(session: GpuSession, work: Path) -> bool:
    """Whether the device computes in fp16 when precision loss is allowed: 1 + 2^-12 is
    1 in fp16 (its spacing at 1 is 2^-10) and 1.000244 in fp32."""
    path = Path(work) / "fp16_probe.tflite"
    path.write_bytes(add_model())
    report = session.load("fp16_probe", path, enforce_f32=False)
    if not report.fully_accelerated:
        raise UserError(f"the fp16 probe did not run on the GPU: {report.error}")
    x = np.ones((1, 1, 1, 4), np.float32)
    z = session.run("fp16_probe", {"x": x, "y": np.full_like(x, 2.0**-12)})["z"]
    return bool(np.all(z == 1.0))
