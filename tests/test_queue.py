"""Queue semantics of the streaming tracker against a slow, obviously-correct reference.

The reference keeps every encoded frame in a Python list and, for frame t, concatenates
exactly the frames that should be in memory: frame 0 and the n-1 most recent frames before
t (never duplicating frame 0). It uses a plain softmax over that concatenation, so any
leak from an empty slot, a wrong eviction or a wrong warm-up shows up as a mask difference.
Run in float64 so that a tolerance of 1e-6 is far above rounding and far below any bug.
"""

from __future__ import annotations

import math

import pytest
import torch

from mobilevos_deploy.data.synthetic import moving_object_clip, scene_clip
from mobilevos_deploy.inference.tracker import track, track_objects
from mobilevos_deploy.model.memory import MemoryState, initial_state, push
from mobilevos_deploy.model.student import Student
from mobilevos_deploy.nn.readout import MemoryReadout

from .conftest import VARIANTS

FRAMES = 9


def memory_frames(t: int, n: int) -> list[int]:
    """Indices of the frames in memory when frame t is segmented with queue length n."""
    return [0] + list(range(max(1, t - (n - 1)), t))


def reference_track(student: Student, frames: torch.Tensor, mask0: torch.Tensor, n: int):
    keys, values, probs = [], [], [mask0]
    enc = student.key_encoder(frames[:1])
    keys.append(enc.key)
    values.append(student.encode_value(mask0[None, None], enc.f16))
    ck = student.config.key_dim
    for t in range(1, frames.shape[0]):
        enc = student.key_encoder(frames[t : t + 1])
        mem = memory_frames(t, n)
        mk = torch.cat([keys[i].flatten(2) for i in mem], dim=2)[0]  # Ck x M
        mv = torch.cat([values[i].flatten(2) for i in mem], dim=2)[0]  # Cv x M
        q = enc.key.flatten(2)[0]  # Ck x P
        logits = (2 * mk.T @ q - (mk**2).sum(0)[:, None]) / math.sqrt(ck)
        readout = (mv @ torch.softmax(logits, dim=0)).reshape(1, -1, *enc.key.shape[-2:])
        prob = torch.sigmoid(student.decoder(readout, enc.query, enc.f8, enc.f4))
        keys.append(enc.key)
        values.append(student.encode_value(prob, enc.f16))
        probs.append(prob[0, 0])
    return torch.stack(probs)


@pytest.fixture(scope="module")
def clip64():
    clip = moving_object_clip(FRAMES, 64, 96, seed=3)
    return clip.frames.double(), clip.masks[0].double()


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tracker_matches_concatenating_reference(students, clip64, name, n):
    student = students[name].double()
    try:
        frames, mask0 = clip64
        with torch.no_grad():
            expected = reference_track(student, frames, mask0, n)
        got = track(student, frames, mask0, n)
    finally:
        student.float()
    assert got.shape == expected.shape == (FRAMES, 64, 96)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_memory_contents_change_the_mask(students, clip64):
    """Guards the test above: if memory did not matter, queue bugs could not show."""
    student = students["mobilenetv2-noaspp"].double()
    try:
        frames, mask0 = clip64
        short = track(student, frames, mask0, 1)
        long = track(student, frames, mask0, 5)
    finally:
        student.float()
    assert (short[2:] - long[2:]).abs().max() > 1e-3


def reference_track_objects(student: Student, frames: torch.Tensor, masks0: torch.Tensor,
                            n: int) -> torch.Tensor:
    """STCN's multi-object loop written out: every object's memory a list of frames, each
    written from the soft-aggregated probabilities (background prod(1 - p), clamped to
    [1e-7, 1 - 1e-7], softmax of the log-odds) with the other objects' sum."""
    k = masks0.shape[0]
    enc = student.key_encoder(frames[:1])
    keys, values = [enc.key], [[] for _ in range(k)]
    for i in range(k):
        others = sum(masks0[j] for j in range(k) if j != i)
        values[i].append(student.encode_value(masks0[i][None, None], enc.f16,
                                              others[None, None]))
    out = [masks0]
    ck = student.config.key_dim
    for t in range(1, frames.shape[0]):
        enc = student.key_encoder(frames[t : t + 1])
        mem = memory_frames(t, n)
        mk = torch.cat([keys[i].flatten(2) for i in mem], dim=2)[0]
        q = enc.key.flatten(2)[0]
        weights = torch.softmax((2 * mk.T @ q - (mk**2).sum(0)[:, None]) / math.sqrt(ck), 0)
        probs = []
        for i in range(k):
            mv = torch.cat([values[i][j].flatten(2) for j in mem], dim=2)[0]
            readout = (mv @ weights).reshape(1, -1, *enc.key.shape[-2:])
            probs.append(torch.sigmoid(student.decoder(readout, enc.query, enc.f8, enc.f4)))
        p = torch.cat(probs)  # K x 1 x H x W
        every = torch.cat([torch.prod(1 - p, 0, keepdim=True), p]).clamp(1e-7, 1 - 1e-7)
        odds = torch.log(every / (1 - every))
        agg = (torch.exp(odds) / torch.exp(odds).sum(0, keepdim=True))[1:]
        keys.append(enc.key)
        for i in range(k):
            others = sum(agg[j] for j in range(k) if j != i)
            values[i].append(student.encode_value(agg[i][None], enc.f16, others[None]))
        out.append(p[:, 0])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_several_objects_match_the_stcn_reference(students, n):
    clip = scene_clip(FRAMES, 64, 96, seed=5)
    labels = clip.ids()[0]
    ids = [int(v) for v in labels.unique() if v > 0]
    assert len(ids) >= 2
    masks0 = torch.stack([(labels == i).double() for i in ids])
    student = students["mobilenetv2-noaspp"].double()
    try:
        frames = clip.frames.double()
        with torch.no_grad():
            expected = reference_track_objects(student, frames, masks0, n)
            alone = torch.stack([track(student, frames, m, n) for m in masks0])
        got = track_objects(student, frames, masks0, n)
        one = track_objects(student, frames, masks0[:1], n)
    finally:
        student.float()
    assert got.shape == expected.shape == (len(ids), FRAMES, 64, 96)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # one object: exactly the single-object tracker (no aggregation, no other channel)
    torch.testing.assert_close(one[0], alone[0], atol=1e-12, rtol=0)
    if n > 1:  # the objects' memories see each other: the single-object runs differ
        assert (got[:, 2:] - alone[:, 2:]).abs().max() > 1e-3


@pytest.mark.parametrize("n", [1, 3])
def test_the_graph_loop_is_the_tracker(students, n):
    """runtime/loop.py (the app loop over encode/start/segment/memorize, what mvos-run and the
    export gates run) on the PyTorch graph modules is track_objects, frame by frame."""
    from mobilevos_deploy.model.graphs import graph_module, graph_specs, multi_graphs
    from mobilevos_deploy.runtime.loop import rollout_objects
    from mobilevos_deploy.runtime.runners import torch_runner

    student = students["mobilenetv2-noaspp"]
    clip = scene_clip(6, 64, 96, seed=5)
    labels = clip.ids()[0]
    masks0 = torch.stack([(labels == i).float() for i in (1, 2)])
    specs = graph_specs(student, n, 64, 96)
    run = {g: torch_runner(graph_module(student, n, g), specs[g]) for g in multi_graphs(n)}
    probs, _ = rollout_objects(run, n, clip.frames.numpy(), masks0.numpy())
    expected = track_objects(student, clip.frames, masks0, n)[:, 1:]
    torch.testing.assert_close(torch.from_numpy(probs), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_the_apps_numpy_aggregation_is_the_pytorch_rule(k):
    """export.loop.aggregate (NumPy, the odds form, what the app loop runs between the
    graphs) against model.objects.memory_inputs (STCN's log-odds softmax, what PyTorch and
    training run), on probabilities that include exact 0 and 1 and overlapping objects."""
    import numpy as np

    from mobilevos_deploy.model.objects import memory_inputs
    from mobilevos_deploy.runtime.loop import aggregate

    gen = torch.Generator().manual_seed(k)
    probs = torch.rand(k, 1, 1, 24, 40, generator=gen)
    probs[:, ..., :4] = 0.0
    probs[:, ..., 4:8] = 1.0  # every object sure of the same pixels
    probs[0, ..., 8:12] = 1.0
    written, others = aggregate(list(probs.numpy()))
    expected_written, expected_others = memory_inputs(probs)
    assert len(written) == len(others) == k
    assert all(w.dtype == np.float32 and w.shape == (1, 1, 24, 40) for w in written)
    torch.testing.assert_close(torch.from_numpy(np.stack(written)), expected_written,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.from_numpy(np.stack(others)), expected_others,
                               atol=1e-6, rtol=0)
    if k == 1:  # one object: its own probability, a zero channel, nothing aggregated
        assert np.array_equal(written[0], probs[0].numpy()) and not others[0].any()


def _slot_ids(stacked: torch.Tensor, queue: int) -> list[float]:
    hw = stacked.shape[2] // queue
    return [stacked[0, 0, s * hw].item() for s in range(queue)]


@pytest.mark.parametrize("queue", [1, 2, 3, 5])
def test_push_keeps_first_drops_oldest_appends_newest(queue):
    h, w = 2, 3

    def frame(i: float, ch: int) -> torch.Tensor:
        return torch.full((1, ch, h, w), i)

    state = initial_state(frame(0, 4), frame(0, 6), queue)
    assert _slot_ids(state.keys, queue) == [0.0] * queue
    assert _slot_ids(state.valid, queue) == [1.0] + [0.0] * (queue - 1)
    seen = []
    for t in range(1, 8):
        state = push(state, frame(t, 4), frame(t, 6), queue)
        seen.append(float(t))
        recent = seen[-(queue - 1):] if queue > 1 else []
        filled = [0.0] * (queue - 1 - len(recent)) + recent
        assert _slot_ids(state.keys, queue) == [0.0] + filled
        assert _slot_ids(state.values, queue) == [0.0] + filled
        expected_valid = [1.0] + [0.0] * (queue - 1 - len(recent)) + [1.0] * len(recent)
        assert _slot_ids(state.valid, queue) == expected_valid
        for tensor, channels in ((state.keys, 4), (state.values, 6), (state.valid, 1)):
            assert tensor.shape == (1, channels, queue * h * w)
            # every position of a slot holds the same frame: slots never straddle
            for s in range(queue):
                block = tensor[:, :, s * h * w : (s + 1) * h * w]
                assert torch.equal(block, block[:, :, :1].expand_as(block))


def test_empty_slots_are_excluded_exactly():
    """Garbage in an empty slot must not move the read-out, however large it is."""
    gen = torch.Generator().manual_seed(0)
    ck, cv, h, w = 8, 5, 3, 4
    q = torch.randn(1, ck, h, w, generator=gen, dtype=torch.float64)
    mk = torch.randn(1, ck, 2 * h * w, generator=gen, dtype=torch.float64)
    mv = torch.randn(1, cv, 2 * h * w, generator=gen, dtype=torch.float64)
    readout = MemoryReadout(ck)
    ones = torch.ones(1, 1, h * w, dtype=torch.float64)
    two = readout(mk, mv, torch.cat([ones, ones], dim=2), q)
    garbage_k = torch.cat([mk, q.flatten(2)], dim=2)  # the best possible match for every query
    garbage_v = torch.cat([mv, torch.full((1, cv, h * w), 1e6, dtype=torch.float64)], dim=2)
    valid = torch.cat([ones, ones, 0 * ones], dim=2)
    three = readout(garbage_k, garbage_v, valid, q)
    assert torch.isfinite(three).all()
    torch.testing.assert_close(three, two, atol=1e-12, rtol=0)
    # and a valid third slot does change it, so the comparison above can fail
    moved = readout(garbage_k, garbage_v, torch.cat([ones, ones, ones], dim=2), q)
    assert (moved - two).abs().max() > 1.0


def test_state_is_a_namedtuple_of_tensors():
    state = initial_state(torch.zeros(1, 4, 2, 2), torch.zeros(1, 6, 2, 2), 3)
    assert isinstance(state, MemoryState) and len(state) == 3
