"""mvos-info: parameters, MACs per step, state and affinity sizes of the students."""

from __future__ import annotations

import click

from ..config import variant_names
from ..profile import format_profile, profile_variant
from . import parse_size, user_errors


@click.command()
@click.option("--variant", default="all", show_default=True,
              help=f"One of {', '.join(variant_names())}, or 'all'.")
@click.option("--size", default="480x864", show_default=True, help="HEIGHTxWIDTH, multiples of 16.")
@click.option("--queue", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Memory queue length (first frame + queue-1 recent frames).")
@user_errors
def main(variant: str, size: str, queue: int) -> None:
    height, width = parse_size(size)
    names = variant_names() if variant == "all" else [variant]
    for name in names:
        click.echo(format_profile(profile_variant(name, height, width, queue)))
        click.echo()
