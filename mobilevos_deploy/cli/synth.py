"""mvos-synth: write generated clips in the DAVIS layout (no data needed)."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.synthetic import KINDS, write_synth_set
from . import parse_size, user_errors


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Dataset root; JPEGImages/480p/NAME and Annotations/480p/NAME go in it.")
@click.option("--name", default="synth", show_default=True,
              help="Sequence name (with --clips > 1: NAME_000, NAME_001, ...).")
@click.option("--kind", type=click.Choice(KINDS), default="ellipse",
              show_default=True, help="ellipse: the demo clip; shapes: a random textured "
              "shape with an occluder; scene: 2-3 objects, a look-alike distractor and a "
              "moving camera (training data).")
@click.option("--clips", type=click.IntRange(1), default=1, show_default=True,
              help="Number of sequences; clip i uses seed SEED + i.")
@click.option("--frames", "num_frames", default=24, show_default=True, type=click.IntRange(3))
@click.option("--size", default="480x854", show_default=True, help="HEIGHTxWIDTH, any size.")
@click.option("--seed", default=0, show_default=True)
@click.option("--replace", is_flag=True, help="Replace sequences of the same names already in "
              "--out, each as a whole (without it they are refused).")
@user_errors
def main(out: Path, name: str, kind: str, clips: int, num_frames: int, size: str,
         seed: int, replace: bool) -> None:
    height, width = parse_size(size, multiple=1)
    names = write_synth_set(out, name, kind, clips, num_frames, height, width, seed,
                            replace)
    click.echo(f"{out}: {clips} sequence(s) of {num_frames} frames at {height}x{width}, "
               f"last {names[-1]}; masks: "
               + ("objects 1..K" if kind == "scene" else "object 1, occluder 2"))
