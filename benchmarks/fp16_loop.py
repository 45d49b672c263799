"""Where a student's fp16 rollout parts from fp32: closed loop, teacher-forced, per part.

On the export gates' clip (``parity.nchw_clip``, 31 frames, seed 1) at one size and queue,
with the student's weights rounded to fp16 in PyTorch (what the fp16 TFLite files hold):

1. the closed loop against fp32: per-frame IoU over the pixels where fp32 is sure, and per
   frame the number of sure pixels that cross 0.5 with their fp32 probabilities;
2. teacher-forced: each frame read by the fp16 network against the fp32 loop's memory, so
   nothing compounds (per-frame IoU);
3. the closed loop with only one part of the network rounded (key trunk, key projection,
   query projection, value encoder, decoder).

A closed loop that parts while every teacher-forced frame agrees is the loop amplifying a
rounding, not a conversion error (``parity.fp16_gate``; docs/TRAINING.md). Run:

    python benchmarks/fp16_loop.py --ckpt models/mobilenetv2-noaspp_synth.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mobilevos_deploy.export.gates.fp16_compute import half_student as rounded
from mobilevos_deploy.export.gates.parity import UNSURE_BAND, iou, nchw_clip
from mobilevos_deploy.inference.tracker import Tracker
from mobilevos_deploy.model.checkpoint import load_checkpoint
from mobilevos_deploy.model.student import Student

PARTS = ("key_encoder.trunk", "key_encoder.key_proj", "key_encoder.query_proj",
         "value_encoder", "decoder")


def closed_loop(student: Student, frames: torch.Tensor, mask0: torch.Tensor, queue: int):
    """Probabilities of frames 1..T-1 (numpy) and the state each frame was read against."""
    tracker = Tracker(student, queue)
    state = tracker.init(frames[:1], mask0[None, None])
    probs, read = [], []
    for t in range(1, frames.shape[0]):
        read.append(state)
        prob, state = tracker.step(frames[t : t + 1], state)
        probs.append(prob[0, 0].numpy())
    return np.stack(probs), read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queue", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    student = load_checkpoint(args.ckpt, None).student.eval()
    frames, masks = (torch.from_numpy(a) for a in nchw_clip(31, height, width, seed=1))
    ref, ref_states = closed_loop(student, frames, masks[0], args.queue)
    sure = np.abs(ref - 0.5) >= UNSURE_BAND

    half = rounded(student)
    probs, _ = closed_loop(half, frames, masks[0], args.queue)
    per_frame = iou(probs, ref, sure)
    print(f"closed loop, fp16 weights: min IoU {per_frame.min():.4f} (sure pixels) at frame "
          f"{int(per_frame.argmin()) + 1}")
    for t in np.flatnonzero(per_frame < 1.0):
        flips = sure[t] & ((probs[t] > 0.5) != (ref[t] > 0.5))
        print(f"  frame {t + 1}: IoU {per_frame[t]:.4f}, {int(flips.sum())} sure pixels cross "
              f"0.5, fp32 p {ref[t][flips].min():.3f}..{ref[t][flips].max():.3f}")

    tracker = Tracker(half, args.queue)
    forced = np.stack([tracker.step(frames[t + 1 : t + 2], s)[0][0, 0].numpy()
                       for t, s in enumerate(ref_states)])
    per_frame = iou(forced, ref, sure)
    print(f"teacher-forced, fp16 weights: min IoU {per_frame.min():.4f} at frame "
          f"{int(per_frame.argmin()) + 1}")

    for part in PARTS:
        probs, _ = closed_loop(rounded(student, part), frames, masks[0], args.queue)
        per_frame = iou(probs, ref, sure)
        print(f"closed loop, only {part} in fp16: min IoU {per_frame.min():.4f}")


if __name__ == "__main__":
    main()
