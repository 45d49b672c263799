"""mvos-info: parameters, MACs per step, state and affinity sizes of the students; with
--teacher, the kind and size of a teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from ..model.config import variant_names
from ..model.profile import format_profile, profile_variant
from . import parse_size, user_errors


@click.command()
@click.option("--variant", default="all", show_default=True,
              help=f"One of {', '.join(variant_names())}, or 'all'.")
@click.option("--size", default="480x864", show_default=True, help="HEIGHTxWIDTH, multiples of 16.")
@click.option("--queue", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Memory queue length (first frame + queue-1 recent frames).")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="A teacher checkpoint (mvos-train --model teacher, or STCN's stcn.pth): "
              "print its kind and parameter count instead.")
@user_errors
def main(variant: str, size: str, queue: int, teacher: Path | None) -> None:
    if teacher is not None:
        from ..train.teacher import load_teacher, teacher_kind

        network = load_teacher(teacher)
        params = sum(p.numel() for p in network.parameters())
        tensors = len(network.state_dict())
        click.echo(f"{teacher}: teacher kind {teacher_kind(network)}, {params:,} parameters "
                   f"({params / 1e6:.2f} M), {tensors} tensors")
        return
    height, width = parse_size(size)
    names = variant_names() if variant == "all" else [variant]
    for name in names:
        click.echo(format_profile(profile_variant(name, height, width, queue)))
        click.echo()
