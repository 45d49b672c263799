"""PyTorch eager step latency, NCHW vs channels-last, on this host (same run, same student).

    python benchmarks/torch_layout.py [--variant mobilenetv2-noaspp] [--size 480x864] [--queue 2]

The export gates run their PyTorch reference channels-last (runtime/runners.py); mvos-bench's
"torch" column runs the student as it is (NCHW). Median of 7 steps after one warm-up, 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.stages import InitStage, StepStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="mobilenetv2-noaspp")
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queue", type=int, default=2)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    student = student_for(None, args.variant).student.eval()
    frame = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    mask = (frame[:, :1] > 0.5).float()
    with torch.inference_mode():
        state = InitStage(student, args.queue)(frame, mask)
        for layout in ("NCHW", "channels-last"):
            if layout == "channels-last":
                student.to(memory_format=torch.channels_last)
                frame = frame.contiguous(memory_format=torch.channels_last)
            step = StepStage(student, args.queue).eval()
            step(frame, *state)
            times = []
            for _ in range(7):
                start = time.perf_counter()
                step(frame, *state)
                times.append((time.perf_counter() - start) * 1e3)
            print(f"{args.variant} q{args.queue} {args.size} {layout}: "
                  f"median {statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
