"""fp16 weights for any fp32 TFLite model: every float32 constant stored as float16 and
turned back into float32 by a DEQUANTIZE at load.

This is what TensorFlow's converter writes for ``supported_types = [tf.float16]`` (the
onnx2tf path), done on the flatbuffer so that a model from any converter gets it: the GPU
delegate folds the DEQUANTIZE into its fp16 weights, the CPU interpreter runs the
dequantized fp32 weights. ai-edge-quantizer's float casting does this for the weights of
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV and EMBEDDING_LOOKUP only and
leaves every other constant in float32; this pass takes every float32 constant.

Per subgraph, each float32 constant tensor X becomes a runtime tensor, the output of
``DEQUANTIZE(X_fp16)`` placed before every other op; X_fp16 reads a float16 copy of X's
buffer, stored once however many subgraphs read it. A constant with a
value beyond float16's range (65504), or a graph output that is a constant, is kept in
float32.
"""

from __future__ import annotations

import numpy as np

from .flatbuf import pack_model

FP16_MAX = 65504.0
DEQUANTIZE_VERSION = 3  # the version TensorFlow's converter gives an fp16 DEQUANTIZE


def fp16_weights(buf: bytes) -> bytes:
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    dequantize = _opcode(fb, model)
    halves: dict[int, int] = {}  # fp32 buffer → its fp16 copy
    for graph in model.subgraphs:
        made = []
        io = {*graph.inputs, *graph.outputs}  # a constant output stays what it is
        for index in range(len(graph.tensors)):
            tensor = graph.tensors[index]
            data = model.buffers[tensor.buffer].data if tensor.buffer else None
            if (tensor.type != fb.TensorType.FLOAT32 or data is None or len(data) == 0
                    or index in io):
                continue
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32)
            if values.size and float(np.abs(values).max()) > FP16_MAX:
                continue
            if tensor.buffer not in halves:
                half = fb.BufferT()
                half.data = np.frombuffer(values.astype(np.float16).tobytes(), np.uint8)
                halves[tensor.buffer] = len(model.buffers)
                model.buffers.append(half)
            stored = fb.TensorT()
            stored.name = (tensor.name or b"") + b"_fp16"
            stored.shape, stored.type = tensor.shape, fb.TensorType.FLOAT16
            stored.buffer = halves[tensor.buffer]
            graph.tensors.append(stored)
            tensor.buffer = 0  # now computed: the DEQUANTIZE's output
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = dequantize, [len(graph.tensors) - 1], [index]
            made.append(op)
        graph.operators = made + list(graph.operators)
    _drop_unused(model)
    return pack_model(model, len(buf))


def _opcode(fb, model) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.DEQUANTIZE:
            code.version = max(code.version, DEQUANTIZE_VERSION)
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.DEQUANTIZE
    code.version = DEQUANTIZE_VERSION
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _drop_unused(model) -> None:
    """Empty the fp32 buffers no tensor or metadata reads any more (their index stays)."""
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    used |= {m.buffer for m in model.metadata or []}
    for i, buffer in enumerate(model.buffers):
        if i and i not in used:
            buffer.data = None
