"""The state kept on the accelerator: mvos-run's tflite-gpu backend runs one object with
the step's state outputs bound as the next step's inputs (LiteRT CompiledModel tensor
buffers, swapped each frame, never read back), and the app developers' example does the
same; both give the masks of the loop that copies the state through host memory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from mobilevos_deploy.data.synthetic import scene_clip
from mobilevos_deploy.inference.backends import ON_ACCELERATOR, open_backend
from mobilevos_deploy.runtime.gpu import worker_env
from mobilevos_deploy.runtime.venv import checker_python

from .conftest import EXPORT_HEIGHT, EXPORT_WIDTH, TRAINED

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gpu_state_loop.py"
FRAMES = 6


def _clip():
    clip = scene_clip(FRAMES, EXPORT_HEIGHT, EXPORT_WIDTH, seed=3)
    frames = clip.frames.numpy().astype(np.float32)  # T x 3 x H x W
    mask = (clip.ids()[0] == 1).numpy().astype(np.float32)  # H x W, the object
    return frames, mask


def _copying_loop(backend, frames, mask) -> np.ndarray:
    """The same graphs on the same device, the state read back and written in each frame
    (the export gates' closed loop)."""
    from mobilevos_deploy.export.gates.parity import rollout
    from mobilevos_deploy.model.config import StudentConfig
    from mobilevos_deploy.model.graphs import config_specs

    m = backend.manifest
    spec = config_specs(StudentConfig.from_dict(m["config"]), m["queue"], *m["size"])["step"]
    return rollout(backend._runners["init"], backend._runners["step"], spec, frames, mask)


def test_gpu_backend_keeps_the_state_in_the_accelerators_buffers(exports):
    folder = exports(TRAINED, 2).folder
    frames, mask = _clip()
    backend = open_backend(model=folder, ckpt=None, backend="tflite-gpu", precision="fp16",
                           queue=None, size=None)
    try:
        states = backend.init(frames[:1], [mask[None, None]])
        assert states == [ON_ACCELERATOR]  # the caller holds no state arrays
        probs = []
        for t in range(1, FRAMES):
            (prob,), states = backend.step(frames[t : t + 1], states)
            probs.append(prob)
        copied = _copying_loop(backend, frames, mask)
    finally:
        backend.close()
    log = backend.stream_log
    assert len(log) == FRAMES - 1
    for entry in log:  # only the probability comes back; no state buffer is read
        state = {*entry["buffers"]["in"].values(), *entry["buffers"]["out"].values()}
        assert entry["returned"] == ["prob"] and not state & set(entry["read"])
        # a run never reads and writes one buffer (the GPU would compute from garbage)
        assert not set(entry["buffers"]["in"].values()) & set(entry["buffers"]["out"].values())
    # each step reads the buffers the previous step wrote, and writes the other set:
    # two sets of state buffers for the whole clip, no new ones per frame
    for before, after in zip(log, log[1:], strict=False):
        assert after["buffers"]["in"] == before["buffers"]["out"]
        assert after["buffers"]["out"] == before["buffers"]["in"]
    assert np.array_equal(np.stack(probs), copied)
    assert 0 < (copied > 0.5).sum()


def test_the_app_example_gives_the_copying_loops_masks(exports, tmp_path):
    """examples/gpu_state_loop.py, run as an app developer runs it (the GPU venv's python,
    numpy and ai-edge-litert only), against the copying loop on the same device."""
    folder = exports(TRAINED, 2).folder
    frames, mask = _clip()
    np.save(tmp_path / "clip.npy", frames.transpose(0, 2, 3, 1))
    np.save(tmp_path / "mask.npy", mask)
    proc = subprocess.run(
        [str(checker_python()), str(EXAMPLE), str(folder), "--frames", str(tmp_path / "clip.npy"),
         "--mask", str(tmp_path / "mask.npy"), "--precision", "fp32",
         "--out", str(tmp_path / "probs.npy")],
        capture_output=True, text=True, env=worker_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("object pixels") == FRAMES - 1
    backend = open_backend(model=folder, ckpt=None, backend="tflite-gpu", precision="fp32",
                           queue=None, size=None)
    try:
        copied = _copying_loop(backend, frames, mask)
    finally:
        backend.close()
    assert np.array_equal(np.load(tmp_path / "probs.npy"), copied)
