"""Writing a TFLite flatbuffer from the schema's object API, constant buffers aligned."""

from __future__ import annotations

import flatbuffers
import numpy as np

TFLITE_IDENTIFIER = b"TFL3"


class _AlignedBuilder(flatbuffers.Builder):
    """Keeps constant buffers 16-byte aligned, as TFLite's converter writes them."""

    def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
        if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.size >= 16:
            self.StartVector(1, x.size, 16)
            self.head -= x.size
            self.Bytes[self.head : self.head + x.size] = x.tobytes()
            self.vectorNumElems = x.size
            return self.EndVector()
        return super().CreateNumpyVector(x)


def signature(fb, key: str, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]]):
    """A SignatureDefT named ``key`` of subgraph 0 from (name, tensor index) pairs; ``fb``
    is either schema module."""

    def tensor_map(name: str, index: int):
        entry = fb.TensorMapT()
        entry.name, entry.tensorIndex = name, index
        return entry

    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = key, 0
    sig.inputs = [tensor_map(n, i) for n, i in inputs]
    sig.outputs = [tensor_map(n, i) for n, i in outputs]
    return sig


def pack_model(model, size_hint: int) -> bytes:
    """A ``ModelT`` (from either schema module: TensorFlow's or LiteRT's) as file bytes."""
    builder = _AlignedBuilder(size_hint + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())
