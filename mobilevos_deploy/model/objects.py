"""Several objects the STCN way: what each object's memory is written from.

Each object has its own memory queue and is segmented on its own. Before the frame is
written into the queues, the K probabilities are merged by STCN's soft aggregation
(background = prod_k (1 - p_k); background and objects clamped to [1e-7, 1 - 1e-7],
turned into logits log(p / (1 - p)), a softmax over background + objects), so the objects
compete for pixels. Object k's memory is then encoded from its aggregated probability,
with the sum of the *other* objects' aggregated probabilities in the value encoder's
second channel. The first frame is written from the given masks, the others' masks
summed in that channel (no aggregation: the given masks do not overlap).

One object is left exactly as it was: no aggregation (STCN's would sharpen its
probability), the second channel zero.

The runtimes' app loop (mobilevos_deploy.export.loop) applies these same functions to
its NumPy arrays.
"""

from __future__ import annotations

import torch

CLAMP = 1e-7


def soft_aggregate(probs: torch.Tensor) -> torch.Tensor:
    """K x ... object probabilities → K x ... aggregated object probabilities (the object
    channels of the softmax over background + objects)."""
    background = torch.prod(1 - probs, dim=0, keepdim=True)
    every = torch.cat([background, probs]).clamp(CLAMP, 1 - CLAMP)
    return torch.softmax(torch.log(every / (1 - every)), dim=0)[1:]


def others_sum(probs: torch.Tensor) -> torch.Tensor:
    """K x ... → K x ...: for each object the sum of the others, added in object order."""
    k = probs.shape[0]
    out = []
    for i in range(k):
        rest = [probs[j] for j in range(k) if j != i]
        total = rest[0]
        for r in rest[1:]:
            total = total + r
        out.append(total)
    return torch.stack(out)


def memory_inputs(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K x B x 1 x H x W predicted probabilities → (what each object's memory is written
    from, the other objects' sum), both K x B x 1 x H x W; see the module doc."""
    if probs.shape[0] == 1:
        return probs, torch.zeros_like(probs)
    written = soft_aggregate(probs)
    return written, others_sum(written)


def first_inputs(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K x B x 1 x H x W given first masks → (the masks, the other objects' masks summed);
    zero for one object."""
    if masks.shape[0] == 1:
        return masks, torch.zeros_like(masks)
    return masks, others_sum(masks)


def memory_inputs_batched(probs: torch.Tensor, present: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training's form of :func:`memory_inputs`: B clips at once, each with up to K objects.

    probs: B x K x 1 x H x W; present: B x K bool (a clip's absent slots are ignored: their
    probability counts as 0 and they get none back). A clip with one present object keeps
    its own probability and a zero second channel; a clip with several is aggregated over
    its present objects, as :func:`memory_inputs` does (the others' sum here is the total
    less the object's own, equal up to float rounding).
    """
    keep = present[:, :, None, None, None].to(probs.dtype)
    probs = probs * keep
    background = torch.prod(1 - probs, dim=1, keepdim=True)
    every = torch.cat([background, probs], dim=1).clamp(CLAMP, 1 - CLAMP)
    aggregated = torch.softmax(torch.log(every / (1 - every)), dim=1)[:, 1:] * keep
    others = aggregated.sum(dim=1, keepdim=True) - aggregated
    single = (present.sum(dim=1) <= 1)[:, None, None, None, None]
    return (torch.where(single, probs, aggregated),
            torch.where(single, torch.zeros_like(others), others))
