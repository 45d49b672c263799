"""Export: deployable stages → ONNX → TFLite (onnx2tf), with parity checks.

graphs.py        the init / step graphs, their I/O specs and ONNX export
convert.py       onnx2tf, run offline, its failures surfaced (tf_worker.py in a child)
runtimes.py      one calling convention for PyTorch, ONNX Runtime, LiteRT and its GPU
parity.py        step parity and closed-loop rollout checks
fp16_compute.py  the student with every activation in fp16, as a phone GPU runs it
gpu_run.py       LiteRT's GPU accelerator in its own venv (gpu_worker.py in a child)
gpu_gate.py      the export's GPU gate: delegation verdict and parity on that accelerator
gpu_check.py     TensorFlow 2.17's GPU-delegate analyzer, the second verdict
check.py         both verdicts for any TFLite file (mvos-check)
manifest.py      what an export folder promises
verify.py        whether a folder is what its manifest says (before anything runs on it)
api.py           export_model: staging, gates, manifest, atomic move into place
"""
