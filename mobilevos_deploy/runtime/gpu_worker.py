"""LiteRT's GPU accelerator in a child process (run by ``gpu.py``, never imported by it).

    <gpu venv>/bin/python gpu_worker.py

It runs under the GPU venv's python (ai-edge-litert 2.3, which cannot share a venv with
onnx2tf's 2.1) and imports nothing of this package: the standard library, numpy and
ai_edge_litert only. The Vulkan device is whatever the loader finds in the environment the
parent gives it (``VK_ICD_FILENAMES``, ``LD_LIBRARY_PATH``).

Protocol: messages on stdin and stdout, each an 8-byte little-endian length and then an
``np.savez`` archive whose ``__json__`` entry holds the request or reply as JSON and whose
other entries are arrays. Requests:

    {"op": "load", "name": N, "file": PATH, "enforce_f32": bool, "cpu_fallback": bool}
        compile the file (every signature) for the GPU alone (or GPU + CPU with
        cpu_fallback); the reply has fully_accelerated, the ops the accelerator refused
        (parsed from its log), the Vulkan adapter it selected, the signatures and their
        input shapes, and compile seconds, or an error
    {"op": "run", "name": N, "signature": S} + input arrays by name
        one run of signature S (may be left out when the file has one); the reply carries
        the outputs by name and the run's seconds
    {"op": "time", "name": N, "signature": S, "warmup": W, "runs": R} + input arrays
        W + R runs on the same buffers; the reply has each run's milliseconds
    {"op": "stream_start", "name": N} + frame, mask
        the one-object loop with its state kept on the accelerator: runs the init
        signature and keeps its state outputs as the step's state inputs, in the
        accelerator's own tensor buffers (nothing of the state comes back)
    {"op": "stream_step", "name": N} + frame
        one step: the frame in, the step's state outputs written into the buffers the
        previous step read (two sets, swapped each frame), only ``prob`` read back; the
        reply says which buffers were read and which state buffers each run used
    {"op": "memory"}
        this process's peak resident memory (VmHWM) in MB
    {"op": "quit"}

Native code logs to file descriptor 2; each compile's share of it is captured through a
temporary file. Descriptor 1 is pointed at 2 so that nothing native can write into the
protocol stream, which keeps its own duplicate.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
import tempfile
import time
import traceback

import numpy as np

NOT_SUPPORTED = "Following operations are not supported by GPU delegate:"
ADAPTER = re.compile(r"Selected adapter: (?P<name>[^,]+), arch=(?P<arch>[^,]*), "
                     r"vendor=(?P<vendor>[^,]*), backend=(?P<backend>[^,]*), "
                     r"adapterType=(?P<type>.*)$")
_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64}


def read_message(stream) -> tuple[dict, dict[str, np.ndarray]] | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    with np.load(io.BytesIO(stream.read(size))) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("__json__").tobytes().decode())
    return meta, arrays


def write_message(stream, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    buf = io.BytesIO()
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(buf, __json__=blob, **(arrays or {}))
    data = buf.getvalue()
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


STATUS = re.compile(r"\b(RESOURCE_EXHAUSTED|INVALID_ARGUMENT|UNIMPLEMENTED|INTERNAL|"
                    r"FAILED_PRECONDITION|OUT_OF_RANGE): (.*)$")


def parse_log(text: str) -> dict:
    """The refused ops (op name and reason), the backend's own error statuses (a tensor
    larger than the device can allocate, say) and the selected Vulkan adapter."""
    unsupported, errors, adapter, inside = [], [], None, False
    for line in text.splitlines():
        if m := STATUS.search(line):
            errors.append(f"{m[1]}: {m[2].strip()}")
        if m := ADAPTER.search(line):
            kind = m["type"].strip()
            adapter = {"name": m["name"].strip(), "arch": m["arch"], "vendor": m["vendor"],
                       "backend": m["backend"], "type": kind,
                       "software": "software" in kind.lower() or kind.upper().startswith("CPU")}
        if NOT_SUPPORTED in line:
            inside = True
            continue
        if inside:
            if re.match(r"^\s*(No operations|\d+ operations) will run", line) or not line.strip():
                inside = False
                continue
            op, _, reason = line.strip().partition(":")
            unsupported.append({"op": op.strip(), "reason": reason.strip()})
    return {"unsupported": unsupported, "errors": errors, "adapter": adapter}


class _CapturedStderr:
    """Native writes to fd 2 go to a temporary file while the block runs."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        os.write(2, self.text.encode())  # still visible in the worker's own log
        return False


class Worker:
    def __init__(self) -> None:
        from ai_edge_litert import compiled_model as cm

        self.cm = cm
        self.env = cm.Environment.create(options=cm.EnvironmentOptions(
            runtime_path=os.path.dirname(os.path.abspath(cm.__file__))))
        self.models: dict[str, dict] = {}
        self.streams: dict[str, dict] = {}
        self.adapter = None

    def load(self, req: dict, _arrays) -> tuple[dict, dict]:
        cm = self.cm
        accel = cm.HardwareAccelerator.GPU
        if req.get("cpu_fallback"):
            accel |= cm.HardwareAccelerator.CPU
        options = cm.Options(hardware_accelerators=accel,
                             gpu_options=cm.GpuOptions(enforce_f32=bool(req["enforce_f32"])))
        reply: dict = {"name": req["name"], "file": req["file"]}
        old = self.models.pop(req["name"], None)
        if old is not None:  # a name loaded again: free the graph it held
            old["model"].close()
        start = time.perf_counter()
        with _CapturedStderr() as log:
            try:
                model = cm.CompiledModel.from_file(req["file"], environment=self.env,
                                                   options=options)
            except Exception as exc:  # the accelerator refused it; the log says why
                model, reply["error"] = None, str(exc).strip()
        reply["compile_s"] = time.perf_counter() - start
        parsed = parse_log(log.text)
        self.adapter = parsed["adapter"] or self.adapter
        if "error" in reply and parsed["errors"]:
            reply["error"] = "; ".join(dict.fromkeys(parsed["errors"]))
        reply.update(unsupported=parsed["unsupported"], adapter=self.adapter,
                     fully_accelerated=bool(model is not None and model.is_fully_accelerated()))
        if model is not None:
            sigs = {key: {"inputs": model.get_input_tensor_details(key),
                          "outputs": model.get_output_tensor_details(key)}
                    for key in model.get_signature_list()}
            self.models[req["name"]] = {"model": model, "signatures": sigs}
            reply["signatures"] = {key: {k: v["shape"] for k, v in sig["inputs"].items()}
                                   for key, sig in sigs.items()}
        return reply, {}

    def _signature(self, req: dict) -> tuple[str, dict]:
        sigs = self.models[req["name"]]["signatures"]
        key = req.get("signature") or (next(iter(sigs)) if len(sigs) == 1 else None)
        if key not in sigs:
            raise KeyError(f"{req['name']}: no signature {key!r} (it has {', '.join(sigs)})")
        return key, sigs[key]

    def _buffers(self, req: dict, arrays: dict[str, np.ndarray]):
        name = req["name"]
        model = self.models[name]["model"]
        sig, entry = self._signature(req)
        ins = {}
        for key, detail in entry["inputs"].items():
            if key not in arrays:
                raise KeyError(f"{name}: no input named {key!r}")
            want = _DTYPES[str(detail["dtype"])]
            x = np.ascontiguousarray(arrays[key], want)
            if list(x.shape) != list(detail["shape"]):
                raise ValueError(f"{name}: input {key} is {list(x.shape)}, the graph takes "
                                 f"{list(detail['shape'])}")
            buf = model.create_input_buffer_by_name(sig, key)
            buf.write(x)
            ins[key] = buf
        outs = {key: model.create_output_buffer_by_name(sig, key) for key in entry["outputs"]}
        return sig, ins, outs

    def _read(self, req: dict, outs) -> dict[str, np.ndarray]:
        result = {}
        for key, detail in self._signature(req)[1]["outputs"].items():
            shape = [int(d) for d in detail["shape"]]
            dtype = _DTYPES[str(detail["dtype"])]
            result[key] = outs[key].read(int(np.prod(shape)), dtype).reshape(shape)
        return result

    def run(self, req: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        model = self.models[req["name"]]["model"]
        sig, ins, outs = self._buffers(req, arrays)
        start = time.perf_counter()
        model.run_by_name(sig, ins, outs)
        result = self._read(req, outs)  # reading waits for the device
        return {"seconds": time.perf_counter() - start}, result

    def time(self, req: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        model = self.models[req["name"]]["model"]
        sig, ins, outs = self._buffers(req, arrays)
        times = []
        for _ in range(int(req["warmup"]) + int(req["runs"])):
            start = time.perf_counter()
            model.run_by_name(sig, ins, outs)
            self._read(req, outs)
            times.append((time.perf_counter() - start) * 1e3)
        return {"times_ms": times[int(req["warmup"]):],
                "warmup_ms": times[: int(req["warmup"])]}, {}


    def stream_start(self, req: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        model = self.models[req["name"]]["model"]
        sigs = self.models[req["name"]]["signatures"]
        state_names = [k for k in sigs["step"]["inputs"] if k != "frame"]
        ins, outs = self._buffers({**req, "signature": "init"}, arrays)[1:]
        model.run_by_name("init", ins, outs)
        # the step reads what init wrote: init's output buffers are the step's inputs
        self.streams[req["name"]] = {
            "state": {k: outs[k] for k in state_names}, "spare": None,
            "frame": model.create_input_buffer_by_name("step", "frame"),
            "prob": model.create_output_buffer_by_name("step", "prob"),
            "shape": [int(d) for d in sigs["step"]["inputs"]["frame"]["shape"]],
            "prob_shape": [int(d) for d in sigs["step"]["outputs"]["prob"]["shape"]]}
        return {"state": state_names}, {}

    def stream_step(self, req: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        model = self.models[req["name"]]["model"]
        stream = self.streams[req["name"]]
        if stream["spare"] is None:  # the second set, made once
            stream["spare"] = {k: model.create_output_buffer_by_name("step", "next_" + k)
                               for k in stream["state"]}
        frame = np.ascontiguousarray(arrays["frame"], np.float32)
        if list(frame.shape) != stream["shape"]:
            raise ValueError(f"frame is {list(frame.shape)}, the step takes {stream['shape']}")
        stream["frame"].write(frame)
        state, spare = stream["state"], stream["spare"]
        model.run_by_name("step", {"frame": stream["frame"], **state},
                          {"prob": stream["prob"], **{"next_" + k: b for k, b in spare.items()}})
        used = {"in": {k: id(b) for k, b in state.items()},
                "out": {k: id(b) for k, b in spare.items()}}
        stream["state"], stream["spare"] = spare, state  # swap: no copy, no read
        # what comes back to host memory: each buffer read is recorded by identity, so a
        # state read would show among the state buffers the run used
        read = {id(stream["prob"])}
        shape = stream["prob_shape"]
        prob = stream["prob"].read(int(np.prod(shape)), np.float32).reshape(shape)
        return {"read": sorted(read), "returned": ["prob"], "buffers": used}, {"prob": prob}

    def memory(self, _req: dict, _arrays) -> tuple[dict, dict]:
        with open("/proc/self/status") as fh:
            kb = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        return {"peak_memory_mb": kb / 1024.0}, {}


def main() -> None:
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything native that prints to stdout lands in the log instead
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer
    try:
        worker = Worker()
    except Exception:
        write_message(proto_out, {"error": "LiteRT could not start: "
                                  + traceback.format_exc(limit=2)})
        return
    while (message := read_message(proto_in)) is not None:
        req, arrays = message
        if req["op"] == "quit":
            break
        try:
            reply, out = getattr(worker, req["op"])(req, arrays)
        except Exception as exc:
            reply, out = {"error": f"{type(exc).__name__}: {exc}"}, {}
        write_message(proto_out, reply, out)


if __name__ == "__main__":
    main()
