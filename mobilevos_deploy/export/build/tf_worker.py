"""ONNX → TFLite for several graphs in one TensorFlow process (run by ``convert.py``).

    python -m mobilevos_deploy.export.build.tf_worker jobs.json

Each job converts one ONNX graph. onnx2tf builds the Keras model (its layout logic is what
we rely on); with ``disable_model_save`` it skips the Keras SavedModel serialisation that
takes ~90 % of its own run time. TensorFlow's TFLiteConverter then writes fp32 and fp16
(fp16 weights, DEQUANTIZE'd at load) with TFLite builtins only, so a graph that would need
flex/select-TF ops fails here instead of on the phone. Finally the I/O tensors get the
ONNX names and a signature named after the graph (``step``, ``init``, ...), the key it
keeps once ``merge.py`` has put the graphs into one model.

A failure prints one line ``MVOS_CONVERT_FAILED <graph> <step>: <message>`` to stderr and
exits 3. TensorFlow is imported only here, never by the rest of the package.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

FAILED = "MVOS_CONVERT_FAILED"


def _keras_model(job: dict):
    import onnx2tf

    return onnx2tf.convert(
        input_onnx_file_path=job["onnx"], output_folder_path=job["out"], non_verbose=True,
        keep_shape_absolutely_input_names=job["keep"], disable_model_save=True,
    )


def _tflite(model, job: dict) -> dict[str, bytes]:
    import tensorflow as tf

    specs = [tf.TensorSpec(x.shape, x.dtype, name)
             for x, name in zip(model.inputs, job["inputs"], strict=True)]

    @tf.function(input_signature=specs)
    def graph(*args):
        out = model(list(args))
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    out = {"fp32": converter.convert()}
    if "fp16" in job["precisions"]:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        out["fp16"] = converter.convert()
    return out


def name_io(buf: bytes, key: str, inputs: list[str], outputs: list[str]) -> bytes:
    """Give subgraph 0's I/O tensors the ONNX names and add a signature named ``key``.

    Inputs already carry their TensorSpec names; outputs come in the function's order.
    """
    from tensorflow.lite.python import schema_py_generated as fb

    from .flatbuf import pack_model, signature

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
    graph = model.subgraphs[0]
    by_name = {graph.tensors[i].name.decode(): i for i in graph.inputs}
    in_index = []
    for name in inputs:
        if name not in by_name:
            raise RuntimeError(f"input {name!r} not found among {sorted(by_name)}")
        in_index.append(by_name[name])
    if len(graph.outputs) != len(outputs):
        raise RuntimeError(f"{len(graph.outputs)} outputs, expected {len(outputs)}")
    # were an output an input tensor, it would keep the input's name (inputs are named last);
    # our graphs never have one (stages.pass_through), and runners.check_io refuses it
    for index, name in zip([*graph.outputs, *in_index], [*outputs, *inputs], strict=True):
        graph.tensors[index].name = name.encode()

    model.signatureDefs = [signature(
        fb, key, list(zip(inputs, in_index, strict=True)),
        list(zip(outputs, graph.outputs, strict=True)))]

    return pack_model(model, len(buf))


def run(job: dict) -> None:
    step = "onnx2tf"
    try:
        model = _keras_model(job)
        step = "TFLiteConverter"
        written = _tflite(model, job)
        step = "naming I/O"
        out = Path(job["out"])
        for precision, buf in written.items():
            graph = Path(job["onnx"]).stem
            path = out / f"{graph}_{precision}.tflite"
            path.write_bytes(name_io(buf, graph, job["inputs"], job["outputs"]))
    except Exception as exc:  # report which graph and step failed, then the traceback
        traceback.print_exc()
        message = " ".join(str(exc).split())[:600] or type(exc).__name__
        print(f"{FAILED} {Path(job['onnx']).stem} {step}: {message}", file=sys.stderr)
        sys.exit(3)
    finally:
        import tf_keras

        tf_keras.backend.clear_session()


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    for job in jobs:
        os.chdir(job["out"])  # onnx2tf looks for its calibration sample in the cwd
        run(job)


if __name__ == "__main__":
    main()
