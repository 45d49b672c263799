"""mvos-export: a student → gated ONNX + TFLite step/init graphs, one folder per queue."""

from __future__ import annotations

from pathlib import Path

import click

from ..export.api import PRECISIONS, default_folder_name, export_model
from ..export.parity import runtime_errors
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
@click.option("--single-object", is_flag=True,
              help="Ship only init and step (one object per run, the paper's benchmark "
              "graph), without the K-object graphs encode, start, segment and memorize.")
@user_errors
def main(ckpt: str | None, variant: str | None, queues: str, size: str, precisions: str,
         out: str | None, allow_cpu_fallback: bool, single_object: bool) -> None:
    queue_list, (height, width) = parse_queues(queues), parse_size(size)
    precision_list = _precisions(precisions)
    chosen = student_for(ckpt, variant)
    student, name, trained = chosen.student, chosen.variant, chosen.trained
    for queue in queue_list:
        folder_name = default_folder_name(name, queue, height, width)
        if out is None:
            folder = Path("export") / folder_name
        else:
            folder = Path(out) if len(queue_list) == 1 else Path(out) / folder_name
        result = export_model(student, name, queue, height, width, folder, trained=trained,
                              checkpoint=chosen.checkpoint, model_name=chosen.name,
                              checkpoint_sha256=chosen.sha256,
                              precisions=precision_list, allow_cpu_fallback=allow_cpu_fallback,
                              objects=not single_object)
        for warning in result.warnings:
            click.secho(warning, err=True, fg="red", bold=True)
        click.echo(summary(result.manifest, result.seconds, result.folder))


def _label(manifest: dict) -> str:
    if not manifest["trained"]:
        return "UNTRAINED seeded student"
    ckpt = manifest.get("checkpoint") or {}
    return "trained: " + (ckpt.get("name") or ckpt.get("path") or "?")


def summary(manifest: dict, seconds: dict[str, float], folder: Path) -> str:
    g = manifest["gates"]
    step = g["step_parity"]
    parity = max(runtime_errors(step))
    floor = step.get("pytorch_fp32_vs_fp64.readout", 0.0)
    lines = [
        f"{folder}  ({manifest['variant']}, queue {manifest['queue']}, "
        f"{manifest['size'][0]}x{manifest['size'][1]}, "
        f"{_label(manifest)})",
        f"  step parity      worst {parity:.2g} vs fp64 (limit 1e-4, or 4x PyTorch fp32's own "
        f"error; prob abs / state and read-out rel; PyTorch fp32 read-out {floor:.2g})",
        f"  memory matters   zeroing memory moves the mask by "
        f"{g['memory_dependence']['max_prob_change']:.3f}",
    ]
    if "objects_parity" in g:
        op = g["objects_parity"]
        worst = max(runtime_errors(op))
        dep = g["objects_dependence"]
        graphs = "encode/start/segment/memorize" if "memorize_max_value_change" in dep else (
            "encode/start/segment (queue 1: no memorize)")
        line = (f"  K objects        {graphs} parity worst {worst:.2g}; zeroing memory moves "
                f"segment by {dep['segment_max_prob_change']:.3f}")
        if "memorize_max_value_change" in dep:
            line += (", zeroing the other objects moves memorize by "
                     f"{dep['memorize_max_value_change']:.3g}")
        lines.append(line)
    for key in ("rollout_onnx", "rollout_tflite_fp32", "rollout_tflite_fp16",
                "rollout_fp16_compute", "rollout_gpu_fp16", "rollout_objects_onnx",
                "rollout_objects_tflite_fp32", "rollout_objects_tflite_fp16",
                "rollout_objects_gpu"):
        if key not in g:
            continue
        r = g[key]
        every = r.get("min_iou_all_pixels", float("nan"))
        if "closed_loop_j" in r:  # an fp16 gate (parity.fp16_gate)
            lines.append(f"  {key:<20} min IoU {r['min_iou']:.4f} per step on its own memory "
                         f"write (sure pixels; all {every:.4f}); closed loop: J "
                         f"{r['closed_loop_j']:.4f} vs fp32 {r['reference_j']:.4f}, min IoU "
                         f"{r['closed_loop_min_iou']:.4f} (reported)")
        else:
            lines.append(f"  {key:<20} min IoU {r['min_iou']:.4f} (sure pixels; all "
                         f"{every:.4f}), max prob error {r['max_prob_err']:.2g}")
    run = manifest["gpu_run"]
    if "gpu_parity" in g:
        worst = max(runtime_errors(g["gpu_parity"]))
        adapter = run["adapter"] or {}
        device = adapter.get("name", "?") + (" (software Vulkan, not a GPU)"
                                             if run["software_device"] else "")
        lines.append(f"  GPU accelerator  {run['verdict']} on {device}; every graph's parity "
                     f"worst {worst:.2g} (fp32 enforced; fp16 compute "
                     f"{'available' if run['fp16_compute_available'] else 'not available'})")
    else:
        lines.append(f"  GPU accelerator  {run['verdict']}")
    lines.append(f"  GPU analyzer     {manifest['gpu_check']['verdict']} (TensorFlow 2.17)")
    lines.append("  files            " + ", ".join(manifest["files"]))
    lines.append("  seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return "\n".join(lines)
