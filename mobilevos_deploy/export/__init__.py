"""Export: deployable stages → ONNX → TFLite (onnx2tf), with parity checks.

graphs.py   the init / step graphs, their I/O specs and ONNX export
convert.py  onnx2tf, run offline, its failures surfaced
runtimes.py one calling convention for PyTorch, ONNX Runtime and LiteRT
parity.py   step parity and closed-loop rollout checks
api.py      export_model: staging, gates, manifest, atomic move into place
"""
