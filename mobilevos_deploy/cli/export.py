"""mvos-export: a student → gated ONNX graphs and TFLite models, one folder per queue."""

from __future__ import annotations

from pathlib import Path

import click

from ..bench.devices import load_profile
from ..export.api import (
    CONVERTERS,
    DEFAULT_CONVERTER,
    PRECISIONS,
    default_folder_name,
    export_model,
)
from ..export.gates.gpu import BufferLimit
from ..model.checkpoint import student_for
from ..model.config import DEFAULT_VARIANT, variant_names
from . import parse_queues, parse_size, user_errors


def _precisions(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    if not chosen or set(chosen) - set(PRECISIONS):
        raise click.BadParameter(f"expected a list from {','.join(PRECISIONS)}, got {text!r}")
    return chosen


@click.command()
@click.option("--ckpt", type=click.Path(dir_okay=True), default=None,
              help="Student checkpoint. Without it: the trained default student "
              "(mobilenetv2-noaspp), or the seeded untrained student of another --variant; "
              "'seeded': the seeded untrained student, marked untrained.")
@click.option("--variant", default=None, help=f"One of {', '.join(variant_names())} "
              f"(default {DEFAULT_VARIANT}, or the checkpoint's).")
@click.option("--queue", "queues", default="2", show_default=True,
              help="Queue length(s): 2, 1-20 or 1,2,5 (each 1..64).")
@click.option("--size", default="480x864", show_default=True, help="HEIGHTxWIDTH, "
              "multiples of 16 (DAVIS 480p padded).")
@click.option("--precision", "precisions", default="fp32,fp16", show_default=True,
              help="TFLite precisions to ship.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Export folder (one queue), or the parent of one folder per queue. "
              "Default: export/<variant>_q<Q>_<H>x<W>.")
@click.option("--allow-cpu-fallback", is_flag=True,
              help="Export even if ops are not supported by the GPU delegate (warns loudly).")
@click.option("--converter", type=click.Choice(CONVERTERS), default=DEFAULT_CONVERTER,
              show_default=True, help="onnx2tf (PyTorch → ONNX → TensorFlow → TFLite) or "
              "litert-torch (PyTorch → TFLite directly; needs `make litert-torch-venv`). "
              "Every gate runs on either's files.")
@click.option("--device", default="s22", show_default=True,
              help="The target phone's profile (android_benchmark/devices/): its GPU's "
              "largest buffer bounds every tensor of the export (the gpu_buffers gate).")
@click.option("--single-object", is_flag=True,
              help="Ship only init and step (one object per run, the paper's benchmark "
              "graph), without the K-object graphs encode, start, segment and memorize.")
@user_errors
def main(ckpt: str | None, variant: str | None, queues: str, size: str, precisions: str,
         out: str | None, allow_cpu_fallback: bool, converter: str, device: str,
         single_object: bool) -> None:
    queue_list, (height, width) = parse_queues(queues), parse_size(size)
    precision_list = _precisions(precisions)
    profile = load_profile(device)
    buffer = BufferLimit(profile.gpu_max_buffer_bytes, profile.gpu_max_buffer_source,
                         profile.name)
    chosen = student_for(ckpt, variant)
    for queue in queue_list:
        folder_name = default_folder_name(chosen.variant, queue, height, width)
        if out is None:
            folder = Path("export") / folder_name
        else:
            folder = Path(out) if len(queue_list) == 1 else Path(out) / folder_name
        result = export_model(chosen, queue, height, width, folder, precisions=precision_list,
                              allow_cpu_fallback=allow_cpu_fallback, objects=not single_object,
                              gpu_buffer=buffer, converter=converter)
        for warning in result.warnings:
            click.secho(warning, err=True, fg="red", bold=True)
        click.echo(result.summary())
