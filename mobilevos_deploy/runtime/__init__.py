"""What runs a graph, for the export's gates, mvos-run and mvos-bench alike.

runners.py     one calling convention (dicts of NCHW / 3-D arrays) for PyTorch (fp32, and
               float64 as the exact reference), ONNX Runtime and LiteRT's interpreter
gpu.py         LiteRT's GPU accelerator in the GPU venv (gpu_worker.py in a child process)
venv.py        where that venv is
loop.py        the K-object app loop over the encode / start / segment / memorize graphs
"""
