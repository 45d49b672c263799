"""One training process, or one rank of a torchrun job (PyTorch's own distributed package).

``torchrun --nproc_per_node N --no-python mvos-train ...`` starts N copies of mvos-train
with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set; each joins the
process group (NCCL on GPUs, gloo on CPU) through ``env://``. Without those variables
(or with WORLD_SIZE=1) it is a plain single process and no group is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UserError

DEVICES = ("cpu", "cuda")
# rank 0 validates and writes checkpoints while the others wait at the next collective
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and validates."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The per-rank figures averaged over the ranks (a NaN on any rank stays NaN)."""
        if self.world == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist(), strict=True))

    def agree(self, ok: bool) -> bool:
        """True when every rank says ``ok`` (a collective: call it on every rank)."""
        if self.world == 1:
            return ok
        t = torch.tensor([0.0 if ok else 1.0], device=self.device)
        dist.all_reduce(t)
        return float(t) == 0.0


def start(device: str) -> Context:
    """This process's place in the job; joins the process group under torchrun."""
    if device not in DEVICES:
        raise UserError(f"--device must be one of {DEVICES}, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA device here (torch.cuda."
                        "is_available() is False); use --device cpu, or install a CUDA build "
                        "of torch on a GPU machine")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA "
                            "device(s): --nproc_per_node must not exceed the GPUs per node")
        torch.cuda.set_device(local)
    where = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    if world == 1:
        return Context(0, 1, where)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method="env://",
                                timeout=TIMEOUT)
    return Context(dist.get_rank(), dist.get_world_size(), where)


def stop(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
