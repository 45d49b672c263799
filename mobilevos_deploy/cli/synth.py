"""mvos-synth: write a generated two-object clip in the DAVIS layout (no data needed)."""

from __future__ import annotations

from pathlib import Path

import click

from ..synthetic import moving_object_clip, write_davis_clip
from . import parse_size, user_errors


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Dataset root; JPEGImages/480p/NAME and Annotations/480p/NAME go in it.")
@click.option("--name", default="synth", show_default=True, help="Sequence name.")
@click.option("--frames", "num_frames", default=24, show_default=True, type=click.IntRange(3))
@click.option("--size", default="480x854", show_default=True, help="HEIGHTxWIDTH, any size.")
@click.option("--seed", default=0, show_default=True)
@user_errors
def main(out: Path, name: str, num_frames: int, size: str, seed: int) -> None:
    height, width = parse_size(size, multiple=1)
    clip = moving_object_clip(num_frames, height, width, seed=seed, occluder_from=0.85)
    frames_dir, masks_dir = write_davis_clip(clip, out, name)
    click.echo(f"{frames_dir}: {num_frames} frames of {height}x{width}\n"
               f"{masks_dir}: masks, objects 1 (ellipse) and 2 (occluder)")
