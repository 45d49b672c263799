"""mvos-track: the PyTorch reference tracker on a generated clip (no data needed)."""

from __future__ import annotations

import statistics

import click
import torch

from ..data.synthetic import moving_object_clip
from ..inference.tracker import track_timed
from ..model.checkpoint import student_for
from ..model.config import DEFAULT_VARIANT, variant_names
from . import parse_size, user_errors


@click.command()
@click.option("--variant", default=None, help=f"One of {', '.join(variant_names())} "
              f"(default {DEFAULT_VARIANT}, or the checkpoint's).")
@click.option("--ckpt", type=click.Path(dir_okay=True), default=None,
              help="Student checkpoint (default: the trained default student for "
              "mobilenetv2-noaspp; 'seeded': the seeded untrained student).")
@click.option("--queue", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--size", default="480x864", show_default=True, help="Clip HEIGHTxWIDTH.")
@click.option("--frames", "num_frames", default=12, show_default=True, type=click.IntRange(2))
@click.option("--seed", default=0, show_default=True, help="Seed of the generated clip.")
@click.option("--threads", default=None, type=click.IntRange(1), help="torch CPU threads.")
@user_errors
def main(variant: str | None, ckpt: str | None, queue: int, size: str, num_frames: int,
         seed: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    height, width = parse_size(size)
    chosen = student_for(ckpt, variant)
    student, name, trained = chosen.student, chosen.variant, chosen.trained
    clip = moving_object_clip(num_frames, height, width, seed=seed)
    result = track_timed(student, clip.frames, clip.masks[0], queue)
    hard = result.probs[1:] > 0.5
    truth = clip.masks[1:] > 0.5
    iou = (hard & truth).sum((1, 2)) / (hard | truth).sum((1, 2)).clamp(min=1)
    click.echo(f"variant {name} ({chosen.label()}), "
               f"queue {queue}, {num_frames} frames of {height}x{width}")
    click.echo(f"  step latency (PyTorch eager, {torch.get_num_threads()} threads): median "
               f"{statistics.median(result.step_ms):.1f} ms, min {min(result.step_ms):.1f} ms")
    click.echo(f"  mean IoU vs generated ground truth: {iou.mean().item():.3f}"
               + ("" if trained else "  (random weights: not a quality figure)"))
    click.echo("  foreground fraction per frame: "
               + " ".join(f"{v:.2f}" for v in hard.float().mean((1, 2)).tolist()))
