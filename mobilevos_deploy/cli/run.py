"""mvos-run: segment a video or a folder of frames from its first-frame mask."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..data.media import open_frames
from ..inference.backends import BACKENDS, open_backend
from ..inference.runner import run_video
from . import parse_size, user_errors


@click.command()
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="An export folder (from mvos-export).")
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="A student checkpoint (PyTorch backend); neither: the trained default "
              "student; 'seeded': the seeded untrained student.")
@click.option("--frames", "frames", type=click.Path(path_type=Path), required=True,
              help="Folder of JPEG/PNG frames, or a video file.")
@click.option("--mask", type=click.Path(path_type=Path), required=True,
              help="First-frame mask: indexed PNG, 0 background, 1..K objects, 255 void.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the per-frame masks (indexed PNGs named like the frames).")
@click.option("--backend", type=click.Choice(BACKENDS), default="tflite", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True, help="TFLite file to run.")
@click.option("--queue", type=click.IntRange(1, 64), default=None,
              help="Memory queue length (an export's own by default; 2 for --ckpt).")
@click.option("--size", default=None, help="Model HEIGHTxWIDTH for --ckpt (default: the "
              "frames' size rounded up to multiples of 16).")
@click.option("--overlay", type=click.Path(path_type=Path), default=None,
              help="Overlay video (.mp4) or contact sheet (.png/.jpg) to look at.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@user_errors
def main(model: Path | None, ckpt: Path | None, frames: Path, mask: Path, out: Path,
         backend: str, precision: str, queue: int | None, size: str | None,
         overlay: Path | None, threads: int) -> None:
    source = open_frames(frames)
    model_size = parse_size(size) if size else None
    if model is None and model_size is None:
        model_size = (-(-source.height // 16) * 16, -(-source.width // 16) * 16)
    engine = open_backend(model=model, ckpt=ckpt, backend=backend, precision=precision,
                          queue=queue, size=model_size, threads=threads)
    with click.progressbar(length=len(source), label="segment", file=sys.stderr) as bar:
        result = run_video(engine, frames, mask, out, overlay, progress=bar.update)
    lat = result.latency()
    click.echo(f"{result.out}: {result.frames} masks, objects {result.objects}, backend "
               f"{engine.name} {engine.precision} on {engine.device}, model "
               f"{engine.height}x{engine.width}, queue {engine.queue}")
    if lat and "software device" in engine.device:
        click.echo("  (a software Vulkan device runs the GPU kernels on the CPU: the latency "
                   "below is not a GPU figure)")
    if lat:
        click.echo(f"  step latency per frame ({len(result.objects)} object(s), {threads} "
                   f"threads): median {lat['median']:.1f} ms, mean {lat['mean']:.1f}, "
                   f"p90 {lat['p90']:.1f}, min {lat['min']:.1f}, max {lat['max']:.1f}")
    if result.overlay:
        click.echo(f"  overlay {result.overlay}")
