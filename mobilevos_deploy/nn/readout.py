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
        mem_key: torch.Tensor,  # B x Ck x N - memory keys, N = Q*h*w slot-major
        mem_value: torch.Tensor,  # B x Cv x N - memory values
        valid: torch.Tensor,  # B x 1 x N - 1.0 at positions of filled slots, else 0.0
        query_key: torch.Tensor,  # B x Ck x h x w - key of the current frame
    ) -> torch.Tensor:  # B x Cv x h x w
        b, ck, h, w = query_key.shape
        dtype = torch.promote_types(query_key.dtype, torch.float32)
        mk = _as(mem_key, dtype)  # B x Ck x N
        q = _as(query_key, dtype).reshape(b, ck, h * w)  # B x Ck x P
        dot = torch.bmm(mk.transpose(1, 2), q)  # B x N x P
        mk_sq = mk.pow(2).sum(dim=1).unsqueeze(2)  # B x N x 1
        logits = (2.0 * dot - mk_sq) * self.scale  # B x N x P
        keep = _as(valid, dtype).transpose(1, 2)  # B x N x 1
        logits = logits - (1.0 - keep) * 1e4  # empty slots far below any valid one
        peak = logits.amax(dim=1, keepdim=True)  # B x 1 x P
        expo = torch.exp(logits - peak) * keep  # empty slots contribute exactly 0
        weights = expo / expo.sum(dim=1, keepdim=True)  # B x N x P
        mv = _as(mem_value, dtype)  # B x Cv x N
        out = torch.bmm(mv, weights)  # B x Cv x P
        return _as(out.reshape(b, -1, h, w), mem_value.dtype)


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast only when needed, so an fp32 export has no Cast nodes."""
    return x if x.dtype == dtype else x.to(dtype)
