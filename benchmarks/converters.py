"""onnx2tf and litert-torch side by side: one export of the default student each, then per
converter x precision the model's bytes, the step's op counts by type, the GPU verdict,
the host step latency, the worst parity error and J&F against PyTorch on generated clips.

    python benchmarks/converters.py [--size 480x864] [--queue 2] [--out results/converters]

Both exports run every gate (mvos-export's recipe, ``export_model``); an export folder
already there with a valid manifest of the same converter is reused (``--again`` makes it
anew). Latency: LiteRT's interpreter with XNNPACK, 2 threads, the ``step`` signature, in
a child process each (bench/host.py), the converters taking turns, median of ``--runs``.
Parity and J&F: each model's init + step over generated scene clips (data/synthetic.py,
seeds no training set uses) against the PyTorch student's own rollout at the same size
and queue: the worst |prob - PyTorch prob| over every frame, and the mean J&F of its masks
(prob > 0.5) taking PyTorch's masks as the truth. Differential: the two fp32 models' step
probabilities on the same clips, worst absolute difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mobilevos_deploy.bench.host import run_in_child
from mobilevos_deploy.cli import parse_size
from mobilevos_deploy.data.synthetic import scene_clip
from mobilevos_deploy.export.api import CONVERTERS, export_model
from mobilevos_deploy.export.artifact.verify import manifest_problems
from mobilevos_deploy.export.build.merge import extract_graph
from mobilevos_deploy.export.gates.parity import rollout
from mobilevos_deploy.inference.tracker import Tracker
from mobilevos_deploy.metrics.davis import boundary_accuracy, region_similarity
from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.graphs import graph_specs, tflite_file
from mobilevos_deploy.runtime.runners import tflite_runner

SHOWN_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE", "PAD", "RESHAPE", "GATHER",
             "DEQUANTIZE", "CONCATENATION", "BATCH_MATMUL", "FULLY_CONNECTED", "SOFTMAX")
CLIP_SEEDS = (300001, 300002)
FRAMES = 10


def op_counts(path: Path) -> Counter:
    """Op types of the model's step signature."""
    from ai_edge_litert.interpreter import Interpreter

    one = Interpreter(model_content=extract_graph(path.read_bytes(), "step"))
    return Counter(op["op_name"] for op in one._get_ops_details())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("results/converters"))
    parser.add_argument("--again", action="store_true")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    chosen = student_for(None, None)
    folders = {}
    for converter in CONVERTERS:
        folder = args.out / f"{converter}_q{args.queue}_{height}x{width}"
        manifest = folder / "manifest.json"
        old = json.loads(manifest.read_text()) if manifest.exists() else None
        if args.again or not (isinstance(old, dict) and not manifest_problems(old)
                              and old.get("converter", {}).get("name") == converter):
            result = export_model(chosen, args.queue, height, width, folder,
                                  converter=converter)
            print(f"{converter}: exported, {result.seconds['total']:.0f} s", flush=True)
        folders[converter] = folder

    specs = graph_specs(chosen.student, args.queue, height, width)
    clips = []
    for seed in CLIP_SEEDS:
        clip = scene_clip(FRAMES, height, width, seed=seed)
        frames = clip.frames.numpy().astype(np.float32)
        mask = (clip.ids()[:1, None] == 1).numpy().astype(np.float32)
        with torch.no_grad():
            tracker = Tracker(chosen.student, args.queue)
            state = tracker.init(clip.frames[:1], torch.from_numpy(mask))
            ref = []
            for t in range(1, FRAMES):
                prob, state = tracker.step(clip.frames[t : t + 1], state)
                ref.append(prob[0, 0].numpy())
        clips.append((frames, mask, np.stack(ref)))

    rows, probs = [], {}
    for converter, folder in folders.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        for precision in ("fp32", "fp16"):
            path = folder / tflite_file(precision)
            init, step = (tflite_runner(path, specs[g]) for g in ("init", "step"))
            worst, scores, mine = 0.0, [], []
            for frames, mask, ref in clips:
                got = rollout(init, step, specs["step"], frames, mask[0, 0])
                mine.append(got)
                worst = max(worst, float(np.abs(got - ref).max()))
                for ours, truth in zip(got > 0.5, ref > 0.5, strict=True):
                    scores.append((region_similarity(ours, truth)
                                   + boundary_accuracy(ours, truth)) / 2)
            probs[converter, precision] = mine
            rows.append({"converter": converter, "precision": precision, "bytes":
                         path.stat().st_size, "ops": op_counts(path),
                         "gpu": manifest["gpu_run"]["verdict"], "worst": worst,
                         "jf": float(np.mean(scores)), "times": []})
    for _ in range(2):  # the converters take turns: two rounds of each child
        for row in rows:
            m = run_in_child(folders[row["converter"]], "tflite", row["precision"], 2, 3,
                             args.runs // 2)
            row["times"] += m["times_ms"]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(
        probs["onnx2tf", "fp32"], probs["litert-torch", "fp32"], strict=True))

    print(f"\n# {height}x{width}, queue {args.queue}; clips: scene seeds "
          f"{', '.join(map(str, CLIP_SEEDS))}, {FRAMES} frames each")
    print("| converter | precision | bytes | " + " | ".join(SHOWN_OPS)
          + " | other ops | GPU accelerator | step ms (XNNPACK, 2 threads) "
          "| worst prob error vs PyTorch | J&F vs PyTorch |")
    print("|---|---|---|" + "---|" * len(SHOWN_OPS) + "---|---|---|---|---|")
    for r in rows:
        ops = r["ops"]
        other = sum(v for k, v in ops.items() if k not in SHOWN_OPS)
        print(f"| {r['converter']} | {r['precision']} | {r['bytes']:,} | "
              + " | ".join(str(ops.get(k, 0)) for k in SHOWN_OPS)
              + f" | {other} | {r['gpu']} | {statistics.median(r['times']):.1f} | "
              f"{r['worst']:.1e} | {r['jf']:.4f} |")
    print(f"\ntwo converters' fp32 step, worst |prob difference| over the clips: {diff:.1e}")


if __name__ == "__main__":
    main()
