"""What mvos-export prints of an export: one line per gate, from its manifest."""

from __future__ import annotations

from pathlib import Path

from .gates.parity import runtime_errors


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
    if "gpu_buffers" in g:
        b = g["gpu_buffers"]
        largest = max(v for k, v in b.items() if k.endswith(".largest_bytes"))
        lines.append(f"  GPU buffers      largest tensor {largest / 2**20:.1f} MiB, limit "
                     f"{b['limit_bytes'] / 2**20:.0f} MiB ({b['device']}: {b['source']})")
    for name, m in manifest.get("models", {}).items():
        lines.append(f"  {name}  {m['bytes'] / 1e6:.2f} MB, {m['vs_fp16_weights']:.2f}x the "
                     f"student's weights in fp16; signatures {', '.join(m['signatures'])}")
    lines.append("  files            " + ", ".join(manifest["files"]))
    lines.append("  seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    cpu = {k: v for k, v in manifest.get("seconds", {}).get("cpu", {}).items() if v is not None}
    if cpu:  # where the CPU time went: this process, the converters, the GPU worker
        lines.append("  CPU seconds      " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    per_gate = manifest.get("seconds", {}).get("gates", {})
    if per_gate:  # wall seconds of each gate; the GPU's ran beside the others
        lines.append("  gate seconds     " + ", ".join(f"{k} {v:.1f}"
                                                      for k, v in per_gate.items()))
    return "\n".join(lines)
