"""Export: the student's graphs → ONNX, and → one TFLite model per precision (every graph
a signature), gated, into a folder with a manifest. ``api.export_model`` is the recipe.

build/     graphs → ONNX (onnx.py) → TFLite fp32 and fp16 through onnx2tf (convert.py, with
           tf_worker.py in a TensorFlow child) merged into one model (merge.py); or graphs →
           TFLite directly through litert-torch (litert_torch.py, with
           litert_torch_worker.py in its own venv) and fp16 weights (fp16.py); the
           flatbuffer writer (flatbuf.py)
gates/     what every export must pass: reference.py (PyTorch and float64, built once),
           parity.py (how a runtime is judged), cpu.py (the gates on ONNX Runtime, LiteRT's
           interpreter and the fp16 simulation, fp16_compute.py), gpu.py (LiteRT's GPU
           accelerator), analyzer.py (TensorFlow 2.17's delegate analyzer), check.py (both
           GPU verdicts for any file: mvos-check)
artifact/  manifest.py (what a folder promises), verify.py (whether a folder is what its
           manifest says, before anything runs on it), folder.py (staging, atomic replace)
api.py     export_model; summary.py, what mvos-export prints
"""
