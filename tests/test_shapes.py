"""Shapes, determinism and finiteness of the stages at two non-square sizes."""

from __future__ import annotations

import pytest
import torch

from mobilevos_deploy.data.synthetic import moving_object_clip
from mobilevos_deploy.errors import UserError
from mobilevos_deploy.inference.tracker import Tracker, track
from mobilevos_deploy.model.stages import InitStage, StepStage, state_spec

from .conftest import VARIANTS

# 64x96 → 4x6 features, 96x160 → 6x10: no dimension coincides with another here.
SIZES = [(64, 96), (96, 160)]
QUEUE = 3


def run_steps(student, frames, mask, queue):
    init, step = InitStage(student, queue), StepStage(student, queue, with_readout=True)
    outputs = []
    with torch.no_grad():
        state = init(frames[:1], mask)
        outputs.append(state)
        for t in range(1, frames.shape[0]):
            prob, *state, readout, logit = step(frames[t : t + 1], *state)
            outputs.append((prob, *state, readout, logit))
    return outputs


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stage_shapes_determinism_and_finiteness(students, name, size):
    height, width = size
    student = students[name]
    clip = moving_object_clip(4, height, width, seed=1)
    mask = clip.masks[:1, None]
    first = run_steps(student, clip.frames, mask, QUEUE)
    second = run_steps(student, clip.frames, mask, QUEUE)
    spec = state_spec(student.config, QUEUE, height, width)
    for state, s in zip(first[0], spec, strict=True):
        assert tuple(state.shape) == s.shape and state.dtype == torch.float32
    h, w = height // 16, width // 16
    for prob, keys, values, valid, readout, logit in first[1:]:
        assert prob.shape == logit.shape == (1, 1, height, width)
        assert [tuple(t.shape) for t in (keys, values, valid)] == [s.shape for s in spec]
        assert readout.shape == (1, student.config.value_dim, h * w)
        for t in (prob, keys, values, valid, readout, logit):
            assert torch.isfinite(t).all()
        assert ((prob >= 0) & (prob <= 1)).all()
        assert torch.equal(prob, torch.sigmoid(logit))
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_track_pads_and_crops_sizes_that_are_not_multiples_of_16(students):
    clip = moving_object_clip(3, 50, 75, seed=2)
    probs = track(students["mobilenetv2-noaspp"], clip.frames, clip.masks[0], 2)
    assert probs.shape == (3, 50, 75)
    assert torch.equal(probs[0], clip.masks[0])
    assert torch.isfinite(probs).all()


def test_stages_reject_sizes_that_are_not_multiples_of_16(students):
    tracker = Tracker(students["mobilenetv2-noaspp"], 2)
    with pytest.raises(UserError, match="multiple of 16"):
        tracker.init(torch.rand(1, 3, 50, 64), torch.zeros(1, 1, 50, 64))


def test_track_rejects_mismatched_mask(students):
    clip = moving_object_clip(2, 32, 48)
    with pytest.raises(UserError, match="first mask"):
        track(students["mobilenetv2-noaspp"], clip.frames, clip.masks[0, :16], 2)


def test_scene_clips_have_several_objects_a_distractor_and_are_reproducible():
    """mvos-synth --kind scene: 2-3 annotated objects in the first frame, objects that
    move, the same clip for the same seed and another for another seed."""
    from mobilevos_deploy.data.synthetic import scene_clip

    clip = scene_clip(8, 60, 96, seed=3)
    ids = clip.ids()
    assert clip.frames.shape == (8, 3, 60, 96) and ids.shape == (8, 60, 96)
    assert 0.0 <= float(clip.frames.min()) and float(clip.frames.max()) <= 1.0
    present = set(torch.unique(ids[0]).tolist()) - {0}
    assert present in ({1, 2}, {1, 2, 3})
    assert set(torch.unique(ids).tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(ids[0], ids[-1])  # they move
    assert torch.equal(scene_clip(8, 60, 96, seed=3).frames, clip.frames)
    assert not torch.equal(scene_clip(8, 60, 96, seed=4).frames, clip.frames)
    counts = [len(set(torch.unique(scene_clip(4, 60, 96, seed=s).ids()[0]).tolist()) - {0})
              for s in range(6)]
    assert max(counts) <= 3 and min(counts) >= 2
