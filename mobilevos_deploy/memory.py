"""The finite memory queue: a fixed-capacity state of tensors and its pure update.

Slot 0 always holds the first frame (encoded from the given mask). Slots 1..Q-1 hold the
Q-1 most recent frames, oldest first, encoded from predicted masks. Slots are stacked
along the height axis so every state tensor stays 4-D (the TFLite GPU delegate rejects
rank > 4); ``valid`` marks filled slots, and empty slots are excluded from the read-out.

Here is where the queue gets updated: :func:`push`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class MemoryState(NamedTuple):
    keys: torch.Tensor  # B x Ck x (Q*h) x w - slot s occupies rows [s*h, (s+1)*h)
    values: torch.Tensor  # B x Cv x (Q*h) x w - same layout as keys
    valid: torch.Tensor  # B x Q x 1 x 1 - 1.0 where the slot holds a frame, else 0.0

    @property
    def queue(self) -> int:
        return self.valid.shape[1]


def initial_state(key: torch.Tensor, value: torch.Tensor, queue: int) -> MemoryState:
    """First frame in slot 0, the Q-1 recent slots empty.

    key: B x Ck x h x w, value: B x Cv x h x w.
    """
    if queue < 1:
        raise ValueError(f"queue length must be >= 1, got {queue}")
    b, _, h, w = key.shape
    first = key.new_ones(b, 1, 1, 1)
    if queue == 1:
        return MemoryState(key, value, first)
    keys = torch.cat([key, key.new_zeros(b, key.shape[1], (queue - 1) * h, w)], dim=2)
    values = torch.cat([value, value.new_zeros(b, value.shape[1], (queue - 1) * h, w)], dim=2)
    valid = torch.cat([first, key.new_zeros(b, queue - 1, 1, 1)], dim=1)
    return MemoryState(keys, values, valid)


def _shift_in(stacked: torch.Tensor, new: torch.Tensor, queue: int, axis: int) -> torch.Tensor:
    """Keep slot 0, drop slot 1 (the oldest recent frame), append ``new`` as slot Q-1."""
    size = new.shape[axis]
    kept = [stacked.narrow(axis, 0, size)]
    if queue > 2:
        kept.append(stacked.narrow(axis, 2 * size, (queue - 2) * size))
    return torch.cat([*kept, new], dim=axis)


def push(state: MemoryState, key: torch.Tensor, value: torch.Tensor) -> MemoryState:
    """The queue update, a pure function. With Q = 1 the memory is the first frame only."""
    queue = state.queue
    if queue == 1:
        return state
    return MemoryState(
        _shift_in(state.keys, key, queue, axis=2),
        _shift_in(state.values, value, queue, axis=2),
        _shift_in(state.valid, torch.ones_like(state.valid[:, :1]), queue, axis=1),
    )
