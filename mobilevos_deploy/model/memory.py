"""The finite memory queue: a fixed-capacity state of tensors and its pure update.

Slot 0 always holds the first frame (encoded from the given mask). Slots 1..Q-1 hold the
Q-1 most recent frames, oldest first, encoded from predicted masks. Every state tensor is
3-D, B x C x N with the N = Q*h*w memory positions flattened slot-major (slot s occupies
positions [s*h*w, (s+1)*h*w)), which is the layout the read-out multiplies in and one
onnx2tf keeps unchanged on input and output. All three share it: ``valid`` is 1.0 at every
position of a filled slot, and empty slots are excluded from the read-out.

Here is where the queue gets updated: :func:`push`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class MemoryState(NamedTuple):
    keys: torch.Tensor  # B x Ck x N - N = Q*h*w, slot-major
    values: torch.Tensor  # B x Cv x N
    valid: torch.Tensor  # B x 1 x N - 1.0 at positions of filled slots, else 0.0


def initial_state(key: torch.Tensor, value: torch.Tensor, queue: int) -> MemoryState:
    """First frame in slot 0, the Q-1 recent slots empty.

    key: B x Ck x h x w, value: B x Cv x h x w.
    """
    if queue < 1:
        raise ValueError(f"queue length must be >= 1, got {queue}")
    key, value = flatten_hw(key), flatten_hw(value)  # B x C x hw
    # computed from the key rather than a constant, so an exported init graph keeps it as an
    # output (converters drop outputs that constant folding turns into initialisers)
    first = key[:, :1] * 0.0 + 1.0
    if queue == 1:
        return MemoryState(key, value, first)

    def after(x: torch.Tensor) -> torch.Tensor:
        """``x`` then Q-1 empty slots, their zeros computed from ``x`` (computed_zeros)."""
        zero = computed_zeros(x)
        return torch.cat([x, *([zero] * (queue - 1))], dim=2)

    return MemoryState(after(key), after(value), torch.cat(
        [first, *([computed_zeros(key[:, :1])] * (queue - 1))], dim=2))


def computed_zeros(x: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like ``x`` (finite), computed from it at run time: relu(-|x|).

    A zeros tensor, or x * 0, is folded by the converters into a constant stored in the
    file (x * 0 by litert-torch's MLIR canonicalisation): at 480x864 and queue 20 the empty
    memory slots alone were 10 MB of an fp16 model whose weights are 3.9 MB. Three cheap
    element-wise ops (ABS, NEG, RELU, all on the GPU delegate) are not folded."""
    return torch.relu(-torch.abs(x))


def flatten_hw(x: torch.Tensor) -> torch.Tensor:
    """B x C x h x w → B x C x hw."""
    return x.flatten(2)


def _shift_in(stacked: torch.Tensor, new: torch.Tensor, queue: int) -> torch.Tensor:
    """Keep slot 0, drop slot 1 (the oldest recent frame), append ``new`` as slot Q-1."""
    hw = new.shape[2]
    kept = [stacked[:, :, :hw]]
    if queue > 2:
        kept.append(stacked[:, :, 2 * hw :])
    return torch.cat([*kept, new], dim=2)


def push(state: MemoryState, key: torch.Tensor, value: torch.Tensor, queue: int) -> MemoryState:
    """The queue update, a pure function. With Q = 1 the memory is the first frame only.

    key: B x Ck x h x w, value: B x Cv x h x w. ``queue`` is a Python int (not read off a
    tensor) so tracing sees no branch.
    """
    if queue == 1:
        return state
    key, value = flatten_hw(key), flatten_hw(value)
    return MemoryState(
        _shift_in(state.keys, key, queue),
        _shift_in(state.values, value, queue),
        _shift_in(state.valid, torch.ones_like(key[:, :1]), queue),
    )
