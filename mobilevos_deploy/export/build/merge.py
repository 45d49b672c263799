"""Several one-graph TFLite files → one model: each graph a named signature, weights stored once.

onnx2tf converts one graph at a time, and each file carries its own copy of every weight
it uses. LiteRT runs one file holding several subgraphs, each reached by its signature
key (``Interpreter.get_signature_runner(key)``, ``CompiledModel.run_by_name(key, ...)``,
``benchmark_model --signature_to_run_for_benchmark=key``). The merge works on LiteRT's own
flatbuffer schema (``ai_edge_litert.schema_py_generated``):

  - subgraph i is graph i, named after it; its ``serving_default`` signature is renamed to
    the graph's name and points at subgraph i;
  - constant buffers with the same bytes are stored once (the encoders' weights appear in
    init, step, encode, start and memorize alike); every empty buffer becomes buffer 0,
    the schema's empty sentinel;
  - operator codes are merged, and each operator's index into them remapped;
  - metadata entries are kept once by name, ``min_runtime_version`` the highest of all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .flatbuf import pack_model

MIN_RUNTIME = "min_runtime_version"


def _schema():
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _version(data) -> tuple[int, ...]:
    text = bytes(np.asarray(data, np.uint8)).split(b"\0")[0].decode(errors="replace")
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def merge_models(files: dict[str, Path]) -> bytes:
    """``files``: {graph name: one-graph TFLite file with a ``serving_default`` signature},
    in the order the subgraphs take. Returns the merged file's bytes."""
    fb = _schema()
    merged = fb.ModelT()
    merged.buffers = [fb.BufferT()]  # 0: the empty sentinel
    merged.operatorCodes, merged.subgraphs, merged.signatureDefs = [], [], []
    merged.metadata = []
    by_bytes: dict[bytes, int] = {}
    by_code: dict[tuple, int] = {}
    metadata: dict[str, int] = {}  # name → index into merged.metadata
    size = 0
    for index, (name, path) in enumerate(files.items()):
        buf = path.read_bytes()
        size += len(buf)
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
        if len(model.subgraphs) != 1 or len(model.signatureDefs or []) != 1:
            raise ValueError(f"{path.name}: expected one subgraph and one signature, found "
                             f"{len(model.subgraphs)} and {len(model.signatureDefs or [])}")
        if index == 0:
            merged.version, merged.description = model.version, model.description

        def buffer_index(old: int, model=model) -> int:
            data = model.buffers[old].data
            if data is None or len(data) == 0:
                return 0
            raw = np.asarray(data, np.uint8).tobytes()
            key = hashlib.sha256(raw).digest() + len(raw).to_bytes(8, "little")
            if key not in by_bytes:
                by_bytes[key] = len(merged.buffers)
                merged.buffers.append(model.buffers[old])
            return by_bytes[key]

        codes = []
        for code in model.operatorCodes:
            key = (code.deprecatedBuiltinCode, code.builtinCode, code.customCode, code.version)
            if key not in by_code:
                by_code[key] = len(merged.operatorCodes)
                merged.operatorCodes.append(code)
            codes.append(by_code[key])

        graph = model.subgraphs[0]
        graph.name = name.encode()
        for tensor in graph.tensors:
            tensor.buffer = buffer_index(tensor.buffer)
        for op in graph.operators:
            op.opcodeIndex = codes[op.opcodeIndex]
        merged.subgraphs.append(graph)

        sig = model.signatureDefs[0]
        sig.signatureKey, sig.subgraphIndex = name, index
        merged.signatureDefs.append(sig)

        for entry in model.metadata or []:
            key = entry.name.decode()
            data = model.buffers[entry.buffer].data
            if key not in metadata:
                kept = fb.BufferT()
                kept.data = data
                entry.buffer = len(merged.buffers)  # kept apart: never deduplicated
                merged.buffers.append(kept)
                metadata[key] = len(merged.metadata)
                merged.metadata.append(entry)
            elif key == MIN_RUNTIME and data is not None:
                kept = merged.buffers[merged.metadata[metadata[key]].buffer]
                if _version(data) > _version(kept.data):
                    kept.data = data
    return pack_model(merged, size)


def signature_keys(path: Path) -> list[str]:
    """The signature keys of a TFLite file, in subgraph order."""
    fb = _schema()
    model = fb.Model.GetRootAsModel(path.read_bytes(), 0)
    sigs = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    return [s.SignatureKey().decode() for s in sorted(sigs, key=lambda s: s.SubgraphIndex())]


def extract_graph(buf: bytes, key: str) -> bytes:
    """The one-graph model of signature ``key`` of a model's bytes (the merge undone for one
    graph): its subgraph, the buffers it reads, its signature. Tools that time or cut up
    one subgraph (bench/op_profile.py) take it. A one-graph model is returned as it is."""
    fb = _schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    sigs = {s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey: s
            for s in model.signatureDefs or []}
    if len(model.subgraphs) == 1 and (not sigs or key in sigs):
        return buf
    if key not in sigs:
        raise ValueError(f"no signature {key!r} (the model has {', '.join(sigs) or 'none'})")
    sig = sigs[key]
    graph = model.subgraphs[sig.subgraphIndex]
    buffers, index = [fb.BufferT()], {0: 0}
    for tensor in graph.tensors:
        if tensor.buffer not in index:
            index[tensor.buffer] = len(buffers)
            buffers.append(model.buffers[tensor.buffer])
        tensor.buffer = index[tensor.buffer]
    for entry in model.metadata or []:
        buffers.append(model.buffers[entry.buffer])
        entry.buffer = len(buffers) - 1
    sig.subgraphIndex = 0
    model.subgraphs, model.signatureDefs, model.buffers = [graph], [sig], buffers
    return pack_model(model, len(buf))
