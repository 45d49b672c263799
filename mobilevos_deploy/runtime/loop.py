"""The K-object app loop over an export's graphs, as export/README.md writes it out.

    enc = encode(frame)                                   # once per frame
    probs = [segment(enc, state_k) for each object k]     # its own prediction
    written, others = aggregate(probs)                    # STCN's aggregation (model.objects)
    state_k = memorize(enc, written_k, others_k, state_k) # queue > 1

The first frame: ``start(enc, mask_k, others_k)`` with the other objects' given masks
summed. Runners take and give NCHW / 3-D arrays (runners.py); mvos-run's graph backends,
the export gates and the K-object benchmark all run this one loop.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.graphs import NEXT
from ..model.objects import CLAMP, first_inputs
from ..model.stages import STATE_NAMES
from .runners import Runner

State = dict[str, np.ndarray]


def _numpy(rule, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A rule of model.objects (torch, K x ...) applied to K NumPy arrays."""
    with torch.inference_mode():
        first, second = rule(torch.from_numpy(np.stack(arrays)))
    return list(first.numpy()), list(second.numpy())


def aggregate(probs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """model.objects.memory_inputs in NumPy, as an app writes it between the graphs: K
    probabilities → (what each object's memory is written from, the others' sum).

    STCN's softmax over the log-odds l_j = log(o_j), o_j = x_j / (1 - x_j), is
    o_k / sum_j o_j, which needs no log or exp: with the clamp to [1e-7, 1 - 1e-7] the odds
    stay within [1e-7, 1e7], far inside float32. Equal to the PyTorch rule within a few
    float32 ulps (tests/test_queue.py); about a third of its time at 480x864 with K = 3,
    and single-threaded, so it does not fight the runtime's threads for the cores."""
    if len(probs) == 1:
        return [probs[0]], [np.zeros_like(probs[0])]
    p = np.stack(probs)
    background = np.prod(1 - p, axis=0, keepdims=True)
    every = np.clip(np.concatenate([background, p]), CLAMP, 1 - CLAMP)
    odds = every / (1 - every)
    written = odds[1:] / odds.sum(axis=0, keepdims=True)
    total = written.sum(axis=0)
    others = [total - w for w in written]  # as memory_inputs_batched: equal up to rounding
    return list(written), others


def start_objects(run: dict[str, Runner], frame: np.ndarray,
                  masks: list[np.ndarray], enc: State | None = None) -> list[State]:
    """frame 1 x 3 x H x W, masks K x (1 x 1 x H x W) → each object's initial state.
    ``enc``: the frame's ``encode`` outputs, when the caller has them already."""
    enc = enc or run["encode"]({"frame": frame})
    given, others = _numpy(first_inputs, masks)
    states = []
    for m, o in zip(given, others, strict=True):
        out = run["start"]({"key": enc["key"], "f16": enc["f16"], "mask": m, "others": o})
        states.append({n: out[n] for n in STATE_NAMES})
    return states


def step_objects(run: dict[str, Runner], queue: int, frame: np.ndarray, states: list[State],
                 enc: State | None = None) -> tuple[list[np.ndarray], list[State]]:
    """One frame for every object → (each object's probability 1 x 1 x H x W, the next
    states). ``enc``: the frame's ``encode`` outputs, when the caller has them already."""
    enc = enc or run["encode"]({"frame": frame})
    probs = [run["segment"]({**enc, **state})["prob"] for state in states]
    if queue == 1:
        return probs, states
    written, others = aggregate(probs)
    nxt = []
    for state, w, o in zip(states, written, others, strict=True):
        out = run["memorize"]({"key": enc["key"], "f16": enc["f16"], "prob": w, "others": o,
                               **state})
        nxt.append({n: out[NEXT + n] for n in STATE_NAMES})
    return probs, nxt


class Encoded:
    """A clip's frames through one runtime's ``encode``, each frame once: the loops below
    read a frame several times (the looped frames read frame t-1 and t), and ``encode``
    is a function of the frame alone."""

    def __init__(self, run: dict[str, Runner], frames: np.ndarray) -> None:
        self.run, self.frames, self.done = run, frames, {}

    def __getitem__(self, t: int) -> State:
        if t not in self.done:
            self.done[t] = self.run["encode"]({"frame": self.frames[t : t + 1]})
        return self.done[t]


def rollout_objects(run: dict[str, Runner], queue: int, frames: np.ndarray,
                    masks0: np.ndarray, encoded: Encoded | None = None
                    ) -> tuple[np.ndarray, list[list[State]]]:
    """frames T x 3 x H x W, masks0 K x H x W → (K x T-1 x H x W probabilities, the states
    each frame was read against), the runtime feeding back its own states. ``encoded``:
    the same runtime's encoded frames, shared with ``looped_objects``."""
    enc = encoded or Encoded(run, frames)
    states = start_objects(run, frames[:1], [m[None, None] for m in masks0], enc[0])
    probs, read = [], []
    for t in range(1, frames.shape[0]):
        read.append(states)
        out, states = step_objects(run, queue, frames[t : t + 1], states, enc[t])
        probs.append(np.stack([p[0, 0] for p in out]))
    return np.stack(probs, axis=1), read


def looped_objects(run: dict[str, Runner], queue: int, frames: np.ndarray,
                   masks0: np.ndarray, ref_states: list[list[State]],
                   closed: tuple[np.ndarray, Encoded] | None = None) -> np.ndarray:
    """parity.looped_steps for K objects: frame 1 read against the runtime's own start; for
    t >= 2 the runtime steps frame t-1 on the reference's states of frame t-1 (its own
    aggregation and memory writes) and segments frame t with what it wrote.

    ``closed``: the same runtime's closed loop (its probabilities and encoded frames). Its
    frame 1 is this loop's frame 1 (both read the runtime's own start), and its encoded
    frames are these, so neither is run again."""
    enc = closed[1] if closed is not None else Encoded(run, frames)
    if closed is not None:
        probs = [closed[0][:, 0]]
    else:
        states = start_objects(run, frames[:1], [m[None, None] for m in masks0], enc[0])
        first, _ = step_objects(run, queue, frames[1:2], states, enc[1])
        probs = [np.stack([p[0, 0] for p in first])]
    for t in range(2, frames.shape[0]):
        _, written = step_objects(run, queue, frames[t - 1 : t], ref_states[t - 2], enc[t - 1])
        probs.append(np.stack([run["segment"]({**enc[t], **s})["prob"][0, 0] for s in written]))
    return np.stack(probs, axis=1)
