"""The K-object latency: today's loop (one whole step per object) against the new one
(encode once, segment and memorize per object), side by side in one run.

    python benchmarks/objects_latency.py [--size 480x864] [--queue 2] [--objects 1-4]

One export with the K-object graphs (made in export/ on demand, every gate, or reused),
then per frame, for K = 1..4 objects, on each host engine (ONNX Runtime and TFLite fp32 /
fp16 on LiteRT's CPU interpreter, 2 threads):
  today: K x step(frame, state_k) - the frame encoded K times, memory written from each
         object's own probability (the single-object semantics);
  new:   encode(frame) + K x segment + STCN's aggregation + K x memorize.
On ONNX Runtime, mvos-run's sessions stop their threads spinning when a run returns
(runtime.runners.ort_options: otherwise each session's spinning threads took the cores
from the next graph). Today's loop is timed both ways (``today``: ORT's default, spinning
on; ``today_stop``) and the new loop as mvos-run opens it; the ratio is against the
faster of today's two.
Each engine runs its tensors in its own layout (NHWC for LiteRT, NCHW for ONNX Runtime),
passed from graph to graph as an app would, so no transpose is timed. The two loops
alternate frame by frame over the same frames (a realistic state: a few frames of a
generated clip first), so drifts of this shared machine hit both alike; the figure is the
median over ``--frames`` frames of each loop's per-frame time, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mobilevos_deploy.cli import parse_queues, parse_size
from mobilevos_deploy.data.synthetic import scene_clip
from mobilevos_deploy.export.api import default_folder_name, export_model
from mobilevos_deploy.export.artifact.verify import read_manifest
from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.graphs import NEXT, multi_graphs, tflite_file
from mobilevos_deploy.model.stages import STATE_NAMES
from mobilevos_deploy.runtime.loop import start_objects, step_objects
from mobilevos_deploy.runtime.runners import ort_options

ENGINES = ("onnx", "tflite_fp32", "tflite_fp16")


def native_runner(engine: str, folder: Path, graph: str, threads: int = 2,
                  stop: bool = True):
    """A graph of ``folder`` on ``engine``, taking and giving the engine's own layouts; on
    ONNX Runtime as mvos-run opens it (or, ``stop=False``, with ORT's default spinning)."""
    if engine == "onnx":
        if stop:
            opts = ort_options(threads)
        else:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / f"{graph}.onnx"), opts,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        wanted = [i.name for i in session.get_inputs()]
        return lambda inputs: dict(zip(names, session.run(names, {n: inputs[n] for n in wanted}),
                                       strict=True))
    from ai_edge_litert.interpreter import Interpreter

    precision = engine.split("_")[1]
    interpreter = Interpreter(model_path=str(folder / tflite_file(precision)),
                              num_threads=threads)
    runner = interpreter.get_signature_runner(graph)
    wanted = list(runner.get_input_details())
    return lambda inputs: runner(**{n: inputs[n] for n in wanted})


def to_engine(engine: str, x: np.ndarray) -> np.ndarray:
    if engine != "onnx" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def measure(folder: Path, engine: str, queue: int, counts: list[int], frames: np.ndarray,
            masks: list[np.ndarray], steps: int) -> dict[int, dict[str, float]]:
    run = {g: native_runner(engine, folder, g) for g in ("init", "step", *multi_graphs(queue))}
    # today's loop as it runs best: on ONNX Runtime with the default spinning as well
    todays = {"today": {g: native_runner(engine, folder, g, stop=False)
                        for g in ("init", "step")}}
    if engine == "onnx":
        todays["today_stop"] = run
    clip = [to_engine(engine, f[None]) for f in frames]
    given = [to_engine(engine, m[None, None]) for m in masks]
    out = {}
    for k in counts:
        # a realistic state for every loop: a few frames of the clip first
        states = {loop: [{n: r["init"]({"frame": clip[0], "mask": m})[n] for n in STATE_NAMES}
                         for m in given[:k]] for loop, r in todays.items()}
        new = start_objects(run, clip[0], given[:k])
        for t in range(1, 4):
            for loop, r in todays.items():
                states[loop] = [_step(r, clip[t], s) for s in states[loop]]
            _, new = step_objects(run, queue, clip[t], new)
        times = {**{loop: [] for loop in todays}, "new": []}
        for i in range(steps):
            frame = clip[4 + i % (len(clip) - 4)]
            for loop, r in todays.items():
                start = time.perf_counter()
                states[loop] = [_step(r, frame, s) for s in states[loop]]
                times[loop].append(time.perf_counter() - start)
            start = time.perf_counter()
            _, new = step_objects(run, queue, frame, new)
            times["new"].append(time.perf_counter() - start)
        med = {loop: 1e3 * statistics.median(v) for loop, v in times.items()}
        best = min(med[loop] for loop in todays)
        out[k] = {**{f"{loop}_ms": m for loop, m in med.items()}, "ratio": med["new"] / best}
        shown = "  ".join(f"{loop} {m:7.1f} ms" for loop, m in med.items())
        print(f"{engine:<12} K={k}  {shown}  new/today {med['new'] / best:.3f}", flush=True)
    return out


def _step(run, frame: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = run["step"]({"frame": frame, **state})
    return {n: out[NEXT + n] for n in STATE_NAMES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="480x864")
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--objects", default="1-4", help="K values: 1-4 or 1,3")
    parser.add_argument("--frames", type=int, default=15, help="Timed frames per K.")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=Path("results/objects_latency.json"))
    args = parser.parse_args()
    height, width = parse_size(args.size)
    counts = parse_queues(args.objects)
    chosen = student_for(None, None)
    folder = Path("export") / default_folder_name(chosen.variant, args.queue, height, width)
    try:
        manifest = read_manifest(folder)
        fresh = "encode" in manifest["graphs"]
    except Exception:  # noqa: BLE001 (missing, stale or invalid: export again)
        fresh = False
    if not fresh:
        print(f"exporting {folder} (every gate) ...", flush=True)
        export_model(chosen, args.queue, height, width, folder)
    clip = scene_clip(12, height, width, seed=100003)  # held out: a test-set seed
    labels = clip.ids().numpy()
    ids = [k for k in range(1, 5) if (labels[0] == k).any()]
    masks = [(labels[0] == k).astype(np.float32) for k in ids]
    while len(masks) < max(counts):  # a clip has 2-3 objects: more K reuse their masks
        masks.append(np.roll(masks[len(masks) % len(ids)], 17 * len(masks), axis=1))
    results = {}
    for engine in args.engines.split(","):
        results[engine] = measure(folder, engine, args.queue, counts, clip.frames.numpy(),
                                  masks, args.frames)
    record = {"size": [height, width], "queue": args.queue, "folder": str(folder),
              "timed_frames": args.frames, "threads": 2, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
