"""STCN's L2-affinity memory read-out over a fixed-capacity, partly filled memory."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn


class MemoryReadout(nn.Module):
    """Reads memory values at every query position.

    logits[p, n] = (2 * q[:, p] . mk[:, n] - |mk[:, n]|^2) / sqrt(Ck)   (|q|^2 cancels)
    weights = softmax over the memory positions n of *valid* slots only
    readout[:, p] = sum_n weights[p, n] * mv[:, n]

    Laid out for the runtimes, as profiled on LiteRT/XNNPACK (docs/BENCHMARKS.md): the
    affinity is P x N, so the softmax runs over the last, contiguous axis and converts to
    one fused SOFTMAX; the per-slot term -|mk|^2 / sqrt(Ck) and the empty-slot penalty
    ride inside the first matrix product as one extra key channel (against a query
    channel of ones), so no element-wise pass over the P x N affinity is left besides the
    softmax. The second product streams the weights against the small N x Cv values and
    its result is reshaped straight to NHWC.

    Empty slots get a logit 1e4 below an unpenalised one. After the softmax's max is
    subtracted their exponentials underflow to exactly 0 (fp32 underflows below -104)
    unless the best valid key is further than sqrt((1e4 - 104) * sqrt(Ck)) from the
    query (281 at Ck = 64); STCN's keys are nowhere near that. No top-k (TOPK does not
    run on the TFLite GPU delegate). Computed in at least ``compute_dtype``: fp32 in every
    exported graph (the fp16-compute gate, export/gates/fp16_compute.py, keeps it and rounds
    every op's result to fp16 instead; a lower ``compute_dtype`` runs it in that type).

    No two axes of an intermediate may have the same size: onnx2tf guesses layouts from
    shapes and silently mis-transposes when sizes coincide (at Q = 1 the affinity is
    always h*w x h*w). So the memory axis N and the query axis P are padded, when needed,
    with a few positions that cannot collide: empty memory slots (excluded as above) and
    zero queries whose read-out is cropped away.

    No intermediate may exceed ``max_tensor_bytes`` (fp32) either: a phone GPU holds each
    tensor in one buffer, and WebGPU's default limit on one is 128 MiB. At 480x864 and
    queue 20 one P x N affinity is 1620 x 32400, 200 MiB. So the query axis is cut into T
    equal tiles, as few as keep each tile's P/T x N affinity within the limit, and each
    tile is read out on its own: the softmax runs over N, within a row, so every row is
    what the untiled read-out computes. T is 1 wherever the affinity fits.
    """

    EMPTY_PENALTY = 1e4
    MAX_TENSOR_BYTES = 128 * 2**20  # WebGPU's default maxStorageBufferBindingSize

    def __init__(self, key_dim: int, max_tensor_bytes: int | None = None) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(key_dim)
        self.compute_dtype = torch.float32
        self.max_tensor_bytes = max_tensor_bytes or self.MAX_TENSOR_BYTES

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
        n_pad = distinct_size(n, {ck, ck + 1, cv}) - n
        tiles, tile = query_tiles(p, n + n_pad, {ck, ck + 1, cv, n + n_pad},
                                  self.max_tensor_bytes)
        p_pad = tiles * tile - p
        dtype = torch.promote_types(query_key.dtype, self.compute_dtype)
        mk = _pad_last(_as(mem_key, dtype), n_pad)  # B x Ck x N
        valid = _pad_last(_as(valid, dtype), n_pad)  # B x 1 x N
        # scaled before squaring, so that in fp16 (a phone GPU with precision loss allowed)
        # the sum overflows only beyond |mk| = 724 instead of 256
        bias = -(mk * math.sqrt(self.scale)).pow(2).sum(dim=1, keepdim=True)  # B x 1 x N
        bias = bias - (1.0 - valid) * self.EMPTY_PENALTY
        mk = torch.cat([mk, bias], dim=1)  # B x (Ck+1) x N
        q = _pad_last(_as(query_key, dtype).reshape(b, ck, p), p_pad) * (2.0 * self.scale)
        q = torch.cat([q, torch.ones_like(q[:, :1])], dim=1)  # B x (Ck+1) x P
        mv = _pad_last(_as(mem_value, dtype), n_pad).transpose(1, 2)  # B x N x Cv
        parts = []
        for t in range(tiles):  # P = tiles x tile, each tile's read-out on its own
            q_t = q[:, :, t * tile : (t + 1) * tile] if tiles > 1 else q
            logits = torch.bmm(q_t.transpose(1, 2), mk)  # B x tile x N
            weights = torch.softmax(logits, dim=2)  # B x tile x N
            parts.append(torch.bmm(weights, mv))  # B x tile x Cv
        out = torch.cat(parts, dim=1) if tiles > 1 else parts[0]  # B x P x Cv
        if p_pad:
            out = out[:, :p]
        # B x h x w x Cv is already the runtimes' NHWC; a transpose right after the product
        # would be folded into it by the converter as values x weights^T, which makes
        # XNNPACK repack the whole P x N weights on every call (3x slower at queue 20)
        out = out.reshape(b, h, w, cv).permute(0, 3, 1, 2)  # B x Cv x h x w
        return _as(out, mem_value.dtype)


def query_tiles(p: int, n: int, taken: set[int], max_bytes: int) -> tuple[int, int]:
    """(tiles, tile size) for ``p`` query positions against ``n`` memory positions: the
    fewest equal tiles whose tile x n fp32 affinity fits in ``max_bytes``, the tile size
    distinct from ``taken`` and from ``n`` (tiles x tile >= p; the rest is padding). At
    most MAX_TILES: a size that needs more is far beyond any phone's memory, and the
    export's gpu_buffers gate names the tensor that does not fit."""
    bad = taken | {n}
    tiles = max(1, min(MAX_TILES, -(-(p * n * 4) // max_bytes)))
    while True:
        tile = -(-p // tiles)
        while tile in bad or tile == 1 or tiles * tile in bad:
            tile += 1
        if tile * n * 4 <= max_bytes or tile <= 2 or tiles >= MAX_TILES:
            return tiles, tile
        tiles += 1


MAX_TILES = 64


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
