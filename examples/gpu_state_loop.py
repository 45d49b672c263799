"""Track one object with an export's model on LiteRT's GPU accelerator, the memory state
kept on the accelerator from frame to frame: what an app's per-frame loop does.

    .venv-gpucheck/bin/python examples/gpu_state_loop.py export/mobilenetv2-noaspp_q2_480x864 \
        --frames clip.npy --mask mask.npy --out probs.npy

clip.npy: T x H x W x 3 float32 RGB in [0, 1] at the export's size; mask.npy: H x W, the
first frame's object mask in [0, 1]. Writes the probabilities of frames 1..T-1
((T-1) x H x W float32). Needs only numpy and ai-edge-litert 2.3 (the GPU venv,
``make gpu-venv``); the Vulkan device is whatever the loader finds (``make vulkan`` and
``VK_ICD_FILENAMES=.vulkan/vk_swiftshader_icd.json`` on a machine without a GPU).

The model file holds every graph as a signature over one set of weights. ``init`` writes
the first frame into the memory; ``step`` reads the memory, predicts the frame's mask and
writes the next memory (``next_mem_keys``, ...). Two sets of state buffers are made once;
each step reads one set and writes the other, then they swap. Only the probability is read
back to host memory: the state never leaves the accelerator's buffers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from ai_edge_litert import compiled_model as cm

NEXT = "next_"  # a step output named next_X is the next step's input X


def open_model(path: Path) -> cm.CompiledModel:
    """The model compiled for the GPU (every signature); LiteRT's accelerator libraries
    ship inside the ai-edge-litert wheel."""
    env = cm.Environment.create(options=cm.EnvironmentOptions(
        runtime_path=os.path.dirname(os.path.abspath(cm.__file__))))
    options = cm.Options(hardware_accelerators=cm.HardwareAccelerator.GPU)
    model = cm.CompiledModel.from_file(str(path), environment=env, options=options)
    if not model.is_fully_accelerated():
        raise SystemExit(f"{path}: not every op runs on the GPU here")
    return model


def track(model: cm.CompiledModel, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """frames: T x H x W x 3, mask: H x W → (T-1) x H x W probabilities."""
    state_names = [n for n in model.get_signature_list()["step"]["inputs"] if n != "frame"]

    # init: the first frame and its mask → the state, in buffers the step will read
    frame0 = model.create_input_buffer_by_name("init", "frame")
    mask0 = model.create_input_buffer_by_name("init", "mask")
    frame0.write(np.ascontiguousarray(frames[0][None], np.float32))
    mask0.write(np.ascontiguousarray(mask[None, :, :, None], np.float32))
    state = {n: model.create_output_buffer_by_name("init", n) for n in state_names}
    model.run_by_name("init", {"frame": frame0, "mask": mask0}, state)

    # step: a second set of state buffers, a frame buffer and a probability buffer
    spare = {n: model.create_output_buffer_by_name("step", NEXT + n) for n in state_names}
    frame = model.create_input_buffer_by_name("step", "frame")
    prob = model.create_output_buffer_by_name("step", "prob")
    height, width = mask.shape
    probs = []
    for rgb in frames[1:]:
        frame.write(np.ascontiguousarray(rgb[None], np.float32))
        model.run_by_name("step", {"frame": frame, **state},
                          {"prob": prob, **{NEXT + n: b for n, b in spare.items()}})
        state, spare = spare, state  # this step's output is the next step's input
        probs.append(prob.read(height * width, np.float32).reshape(height, width))
    return np.stack(probs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="an mvos-export folder")
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--precision", default="fp16", choices=("fp32", "fp16"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    frames, mask = np.load(args.frames), np.load(args.mask)
    model = open_model(args.export / f"model_{args.precision}.tflite")
    want = [int(d) for d in model.get_input_tensor_details("step")["frame"]["shape"]][1:3]
    if frames.ndim != 4 or list(frames.shape[1:]) != [*want, 3] or list(mask.shape) != want:
        raise SystemExit(f"frames {frames.shape} and mask {mask.shape}: the model takes "
                         f"T x {want[0]} x {want[1]} x 3 frames and a {want[0]} x {want[1]} "
                         "mask")
    probs = track(model, frames, mask)
    np.save(args.out, probs)
    for t, p in enumerate(probs, start=1):
        print(f"frame {t}: {int((p > 0.5).sum())} object pixels")


if __name__ == "__main__":
    main()
