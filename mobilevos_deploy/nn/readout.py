"""STCN's L2-affinity memory read-out over a fixed-capacity, partly filled memory."""

from __future__ import annotations

import math
import warnings

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

    No two axes of an intermediate may have the same size: onnx2tf guesses layouts from
    shapes and silently mis-transposes when sizes coincide (at Q = 1 the affinity is
    always h*w x h*w). So the memory axis N and the query axis P are padded, when needed,
    with a few positions that cannot collide: empty memory slots (excluded exactly, as
    above) and zero queries whose read-out is cropped away.
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
        cv, n, p = _static(mem_value.shape[1]), _static(mem_key.shape[2]), _static(h * w)
        ck = _static(ck)
        n_pad = distinct_size(n, {ck, cv}) - n
        p_pad = distinct_size(p, {ck, cv, n + n_pad}) - p
        dtype = torch.promote_types(query_key.dtype, torch.float32)
        mk = _pad_last(_as(mem_key, dtype), n_pad)  # B x Ck x N
        mem_value = _pad_last(mem_value, n_pad)
        valid = _pad_last(valid, n_pad)
        q = _pad_last(_as(query_key, dtype).reshape(b, ck, p), p_pad)  # B x Ck x P
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
        if p_pad:
            out = out[:, :, :p]
        return _as(out.reshape(b, -1, h, w), mem_value.dtype)


def distinct_size(size: int, taken: set[int]) -> int:
    """The smallest size >= ``size`` that is not in ``taken`` and not 1."""
    while size in taken or size == 1:
        size += 1
    return size


def _static(size) -> int:
    """A traced size as a Python int. Exported graphs are static by design (shapes are
    folded and any leftover Shape op is refused), so freezing the value is what we want."""
    if isinstance(size, int):
        return size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(size)


def _pad_last(x: torch.Tensor, extra: int) -> torch.Tensor:
    """Append ``extra`` zeros along the last axis (a constant, so the export folds it)."""
    if not extra:
        return x
    return torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], dim=-1)


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast only when needed, so an fp32 export has no Cast nodes."""
    return x if x.dtype == dtype else x.to(dtype)
