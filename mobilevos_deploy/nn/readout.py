"""STCN's L2-affinity memory read-out over a fixed-capacity, partly filled memory."""

from __future__ import annotations

import math

import torch
from torch import nn


class MemoryReadout(nn.Module):
    """Reads memory values at every query position.

    logits[n, p] = (2 * mk[:, n] . q[:, p] - |mk[:, n]|^2) / sqrt(Ck)   (|q|^2 cancels)
    weights = softmax over the memory positions n of *valid* slots only
    readout[:, p] = sum_n mv[:, n] * weights[n, p]

    Invalid slots are removed exactly: they are pushed far below the maximum before it is
    taken, and their exponentials are multiplied by zero, so they add exactly 0 to the sum.
    No top-k (TOPK does not run on the TFLite GPU delegate). Computed in at least fp32.
    """

    def __init__(self, key_dim: int) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(key_dim)

    def forward(
        self,
        mem_key: torch.Tensor,  # B x Ck x (Q*h) x w - memory keys, slot-major along height
        mem_value: torch.Tensor,  # B x Cv x (Q*h) x w - memory values, same layout
        valid: torch.Tensor,  # B x Q x 1 x 1 - 1.0 for filled slots, 0.0 for empty ones
        query_key: torch.Tensor,  # B x Ck x h x w - key of the current frame
    ) -> torch.Tensor:  # B x Cv x h x w
        b, ck, h, w = query_key.shape
        q_slots = valid.shape[1]
        dtype = torch.promote_types(query_key.dtype, torch.float32)
        mk = mem_key.to(dtype).reshape(b, ck, q_slots * h * w)  # B x Ck x N
        q = query_key.to(dtype).reshape(b, ck, h * w)  # B x Ck x P
        dot = torch.bmm(mk.transpose(1, 2), q)  # B x N x P
        mk_sq = mk.pow(2).sum(dim=1).unsqueeze(2)  # B x N x 1
        logits = (2.0 * dot - mk_sq) * self.scale  # B x N x P
        logits = logits.reshape(b, q_slots, h * w, h * w)  # B x Q x hw x P
        slot_valid = valid.to(dtype)  # B x Q x 1 x 1
        logits = logits - (1.0 - slot_valid) * 1e4  # empty slots far below any valid one
        peak = logits.amax(dim=(1, 2), keepdim=True)  # B x 1 x 1 x P
        expo = torch.exp(logits - peak) * slot_valid  # empty slots contribute exactly 0
        weights = expo / expo.sum(dim=(1, 2), keepdim=True)
        weights = weights.reshape(b, q_slots * h * w, h * w)  # B x N x P
        mv = mem_value.to(dtype).reshape(b, mem_value.shape[1], q_slots * h * w)  # B x Cv x N
        out = torch.bmm(mv, weights)  # B x Cv x P
        return out.reshape(b, -1, h, w).to(mem_value.dtype)
