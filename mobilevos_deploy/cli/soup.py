"""mvos-soup: a greedy model soup of one variant's checkpoints, ranked by validation J&F."""

from __future__ import annotations

from pathlib import Path

import click

from ..train.soup import greedy_soup
from . import parse_size, user_errors


@click.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--val", type=click.Path(path_type=Path), required=True,
              help="Held-out clips in the DAVIS layout (the ranking signal).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The soup checkpoint (loads in mvos-export).")
@click.option("--size", default="384x384", show_default=True, help="Model HEIGHTxWIDTH.")
@click.option("--queue", type=click.IntRange(1, 64), default=2, show_default=True)
@user_errors
def main(checkpoints: tuple[Path, ...], val: Path, out: Path, size: str, queue: int) -> None:
    result = greedy_soup(list(checkpoints), val, parse_size(size), out, queue, echo=click.echo)
    kept = sum(i.kept for i in result.ingredients)
    click.echo(f"wrote {result.out}: {kept} of {len(result.ingredients)} checkpoints, "
               f"validation J&F {result.score.jf:.4f}")
