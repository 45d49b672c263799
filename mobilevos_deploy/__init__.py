"""mobilevos-deploy: MobileVOS students from PyTorch to verified, measured phone models.

The package by role, in data-flow order:
    nn/          network parts (trunks, ASPP, memory read-out, decoder blocks)
    model/       the student: config registry, network, the memory queue and its pure
                 update, deployable stages (init / step graphs), checkpoints, size profile
    export/      ONNX and TFLite graphs, conversion, runtimes, parity and GPU gates, manifest
    inference/   running a video: PyTorch reference tracker, backends, frame loop, runner
    metrics/     DAVIS J and F, mvos-eval's evaluation
    data/        generated clips, reading and writing frames and masks
    train/       losses, teachers (ours, STCN), ImageNet trunks, clips, loop, ranks, soup
    bench/       host and phone benchmarks, op profiler, results
    cli/         the thin mvos-* commands
    errors.py, files.py, proc.py   user errors, atomic files, worker processes
"""

__version__ = "0.1.0"
