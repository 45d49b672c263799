"""mvos-train: train a student (or the teacher) with the MobileVOS loss."""

from __future__ import annotations

from pathlib import Path

import click

from ..model.config import variant_names
from ..train.distributed import DEVICES
from ..train.loop import BATCHNORM_MODES, SCHEDULES, TEACHER, TrainSettings, train
from ..train.losses import LossConfig
from . import FiniteFloat, parse_size, user_errors

LOSSES = ("ce", "ce+logit", "ce+repr", "ce+logit+repr")
PATHS = click.Path(path_type=Path)


def default_omega(model: str) -> float:
    """The paper's: 0 (supervised contrastive) for ResNet18, 0.95 for the MobileNetV2s."""
    return 0.0 if model == "resnet18" else 0.95


@click.command()
@click.option("--model", type=click.Choice([*variant_names(), TEACHER]), required=True,
              help="Student variant, or 'teacher' (infinite memory, cross-entropy only).")
@click.option("--out", type=PATHS, required=True, help="Run folder (checkpoints, log).")
@click.option("--data", type=PATHS, multiple=True, help="DAVIS / YouTube-VOS root; repeatable.")
@click.option("--data-repeat", "data_repeats", type=click.IntRange(1), multiple=True,
              help="Sampling weight of each --data root's sequences, one per root in order "
              "(STCN's main stage: 5 for DAVIS beside 1 for YouTube-VOS) [1 each].")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Data-loading worker processes per training process.")
@click.option("--backbone-weights", type=PATHS, multiple=True,
              help="torchvision ImageNet state_dict (resnet18-f37072fd.pth, mobilenet_v2-"
              "b0353104.pth / -7ebf99e0.pth) for the trunks of its architecture; repeatable.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="cuda: the GPU of this process's LOCAL_RANK (torchrun), NCCL between ranks.")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision (bf16, or fp16 with loss scaling) [on for cuda].")
@click.option("--static", type=PATHS, multiple=True,
              help="Still images (images/ + masks/) made into deformed clips; repeatable.")
@click.option("--static-iters", type=click.IntRange(0), default=0, show_default=True,
              help="Iterations on --static before --data (with both).")
@click.option("--iters", type=click.IntRange(0), required=True,
              help="Total iterations; 0 writes the initial weights as last.pt and stops.")
@click.option("--size", default="384x384", show_default=True, help="Crop HEIGHTxWIDTH.")
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True,
              help="Clips per process (under torchrun: per rank).")
@click.option("--frames", type=click.IntRange(2), default=5, show_default=True)
@click.option("--queue", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--objects", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Objects of a clip trained jointly, the STCN way: memory written from "
              "their aggregated masks with the others' sum as the value encoder's second "
              "channel (1: one target object per clip, the others background).")
@click.option("--max-skip", type=click.IntRange(1), default=3, show_default=True,
              help="Largest gap between sampled frames of a video clip.")
@click.option("--min-crop", type=FiniteFloat(0.05, 1.0), default=0.5, show_default=True,
              help="Smallest random crop of a video frame, as a fraction of its height "
              "(scale augmentation: the crop is resized to --size).")
@click.option("--lr", type=FiniteFloat(0.0, 1.0, low_open=True), default=1e-5, show_default=True)
@click.option("--weight-decay", type=FiniteFloat(0.0, 1.0), default=1e-7, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True,
              help="Learning rate: constant, or cosine decay to 0 at --iters.")
@click.option("--batchnorm", type=click.Choice(BATCHNORM_MODES), default="frozen",
              show_default=True, help="frozen: statistics and affine kept as loaded (for "
              "pretrained trunks); train: trained (needed from random weights).")
@click.option("--loss", "loss_name", type=click.Choice(LOSSES), default="ce+logit+repr",
              show_default=True)
@click.option("--omega", type=FiniteFloat(0.0, 1.0), default=None,
              help="C_ty = omega C_t + (1 - omega) Y Y^T [0 for resnet18, 0.95 otherwise].")
@click.option("--tau", type=FiniteFloat(0.0, low_open=True), default=0.1,
              show_default=True)
@click.option("--sampling", type=click.Choice(["boundary", "random"]), default="boundary",
              show_default=True)
@click.option("--radius", type=click.IntRange(0), default=1, show_default=True,
              help="Boundary dilation in stride-4 cells.")
@click.option("--max-samples", type=click.IntRange(2), default=1024, show_default=True)
@click.option("--teacher", type=PATHS, default=None,
              help="Teacher: a `mvos-train --model teacher` checkpoint, or the released "
              "STCN checkpoint (stcn.pth).")
@click.option("--teacher-mem-every", type=click.IntRange(1), default=1, show_default=True)
@click.option("--init", type=PATHS, default=None, help="Start from these weights.")
@click.option("--val", type=PATHS, default=None, help="Held-out DAVIS-layout clips.")
@click.option("--val-every", type=click.IntRange(0), default=0, show_default=True)
@click.option("--val-size", default=None, help="Model HEIGHTxWIDTH for validation "
              "(multiples of 16; default: --size).")
@click.option("--save-every", type=click.IntRange(1), default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out.")
@click.option("--progress/--no-progress", default=True)
@user_errors
def main(model: str, out: Path, data: tuple[Path, ...], data_repeats: tuple[int, ...],
         workers: int, backbone_weights: tuple[Path, ...], device: str, amp: bool | None,
         static: tuple[Path, ...],
         static_iters: int, iters: int, size: str, batch: int, frames: int, queue: int,
         objects: int, max_skip: int, min_crop: float, lr: float, weight_decay: float,
         schedule: str,
         batchnorm: str,
         loss_name: str, omega: float | None, tau: float,
         sampling: str, radius: int, max_samples: int, teacher: Path | None,
         teacher_mem_every: int, init: Path | None, val: Path | None, val_every: int,
         val_size: str | None, save_every: int, seed: int, resume: bool, progress: bool) -> None:
    terms = loss_name.split("+")
    loss = LossConfig(logit="logit" in terms, repr="repr" in terms,
                      omega=default_omega(model) if omega is None else omega, tau=tau,
                      sampling=sampling, radius=radius, max_samples=max_samples)
    settings = TrainSettings(
        model=model, out=out, iters=iters, data=data, static=static, static_iters=static_iters,
        size=parse_size(size), frames=frames, batch=batch, queue=queue, max_skip=max_skip,
        min_crop=min_crop, lr=lr,
        weight_decay=weight_decay, loss=loss, teacher=teacher,
        teacher_mem_every=teacher_mem_every, init=init, val=val, val_every=val_every,
        val_size=parse_size(val_size) if val_size else None,
        save_every=save_every, seed=seed, batchnorm=batchnorm, schedule=schedule,
        data_repeats=data_repeats, workers=workers, backbone_weights=backbone_weights,
        device=device, amp=amp, objects=objects)
    result = train(settings, resume=resume, progress=progress, echo=click.echo)
    if result.rank != 0:
        return
    click.echo(f"{result.iterations} iterations in {result.seconds:.0f} s; weights: "
               f"{result.last}" + (f", best validation: {result.best}" if result.best else ""))
