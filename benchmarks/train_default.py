"""The recipe of the shipped default student (models/mobilenetv2-noaspp_synth.pt), end to end.

1. Generates the data with mvos-synth's generators: training clips of both kinds at
   240x427 (scene: seeds 0-299, shapes: seeds 0-149, 16 frames), validation clips (seeds
   50000-50003 of each kind, 240x427) and held-out test clips at the demo's 480x854
   (seeds 100000-100007 of each kind, 24 frames). No seed is shared between the sets.
   The same clips as ``mvos-synth --kind KIND --clips N --seed S --size ...`` writes.
2. Stage 1, pairs: frame 0 and its mask, one later frame to segment (``--frames 2``).
   From random weights a longer clip does not train: the memory's second slot holds the
   network's own (random) prediction, which matches the query as well as frame 0 does and
   averages the read-out to noise. Pairs teach the matching first.
3. Stage 2, the deployed queue: 3-frame clips from stage 1's weights, the second frame's
   memory from the network's own prediction, as at inference; cosine learning rate.
4. Stage 3, larger crops: from stage 2's weights, 192x320 crops (a 12x20 stride-16
   memory instead of 8x8, so the network learns to pick its object among more
   positions), batch 4, lr 3e-4 cosine, 1000 iterations, seed 2.
5. With ``--joint`` (not the shipped student; docs/TRAINING.md, "Stage 4"): stage 4,
   objects jointly (STCN's multi-object training): from stage 3's weights, up to
   3 objects of each clip at once at stage 3's crops, each object's memory written from
   the soft-aggregated probabilities with the other objects' sum in the value encoder's
   second channel, as the K-object loop deploys it; lr 1e-4 cosine, 600 iterations, seed
   3. Stages 1-3 train one object at a time with that channel zero, and weight decay drove
   its first-layer weights to ~1e-9: the network ignores the other objects without it.
6. Scores the last stage's result on the held-out test clips at 480x864 (PyTorch, queue 2, every
   object, through mvos-run's runner and mvos-eval's J&F) beside the copy-the-first-mask
   baseline on the same clips, and plots the loss and validation curves of every stage.

Stages already finished are not trained again; an interrupted one resumes.

    python benchmarks/train_default.py --out results/default_student
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mobilevos_deploy.data.synthetic import scene_clip, shapes_clip, write_davis_clip
from mobilevos_deploy.inference.backends import TorchBackend
from mobilevos_deploy.inference.runner import run_video
from mobilevos_deploy.metrics.evaluate import evaluate
from mobilevos_deploy.model.checkpoint import load_checkpoint
from mobilevos_deploy.train.loop import STATE, TrainSettings, train
from mobilevos_deploy.train.losses import LossConfig

STUDENT = "mobilenetv2-noaspp"
TRAIN_SIZE, TEST_SIZE, MODEL_SIZE = (240, 427), (480, 854), (480, 864)
KINDS = {"scene": scene_clip, "shapes": shapes_clip}
SETS = {  # name: (clips per kind, first seed, frames, size)
    "train": ({"scene": 300, "shapes": 150}, 0, 16, TRAIN_SIZE),
    "val": ({"scene": 4, "shapes": 4}, 50000, 16, TRAIN_SIZE),
    "test": ({"scene": 8, "shapes": 8}, 100000, 24, TEST_SIZE),
}
COMMON = dict(model=STUDENT, size=(128, 128), lr=1e-3, batch=8, max_skip=3, min_crop=0.3,
              batchnorm="train", loss=LossConfig(logit=False, repr=False),
              val_size=(240, 432), val_every=250, save_every=250, seed=0)
STAGES = {"stage1": dict(frames=2, iters=1500, schedule="constant"),
          "stage2": dict(frames=3, iters=3000, schedule="cosine"),
          "stage3": dict(frames=3, iters=1000, schedule="cosine", size=(192, 320), batch=4,
                         lr=3e-4, val_every=300, save_every=300, seed=2)}
# After STAGES (the shipped student's recipe, which the Table-5 ablation trains too), with
# --joint: the objects of a clip trained jointly (trained and measured, not shipped).
JOINT = {"stage4": dict(frames=3, iters=600, schedule="cosine", size=(192, 320), batch=4,
                        lr=1e-4, objects=3, val_every=200, save_every=200, seed=3)}


def make_set(root: Path, name: str) -> Path:
    """Writes the set once (a finished set has its marker file)."""
    counts, seed, frames, (height, width) = SETS[name]
    folder = root / name
    if (folder / ".done").is_file():
        return folder
    for kind, count in counts.items():
        for i in range(count):
            clip = KINDS[kind](frames, height, width, seed=seed + i)
            write_davis_clip(clip, folder, f"{kind}_{i:03d}")  # as mvos-synth names them
    (folder / ".done").write_text("")
    return folder


def run_stage(settings: TrainSettings) -> float:
    """Trains (or resumes, or skips a finished stage); returns the wall time spent now."""
    if (settings.out / f"ckpt_{settings.iters:06d}.pt").is_file():
        return 0.0
    start = time.perf_counter()
    train(settings, resume=(settings.out / STATE).is_file(), progress=False, echo=print)
    return time.perf_counter() - start


def student_backend(ckpt: Path) -> TorchBackend:
    """The student of ``ckpt`` as the held-out clips are scored: PyTorch, queue 2, 480x864."""
    return TorchBackend(load_checkpoint(ckpt, STUDENT).student, 2, *MODEL_SIZE)


def held_out(backend, test: Path, results: Path) -> dict:
    """J&F of ``backend`` (any mvos-run backend) and of the copy-first baseline on the test
    clips, per kind and all together; the masks go to ``results`` (one folder per clip, as
    mvos-run writes)."""
    frames, annotations = test / "JPEGImages" / "480p", test / "Annotations" / "480p"
    names = sorted(p.name for p in annotations.iterdir())
    for name in names:
        run_video(backend, frames / name, annotations / name / "00000.png", results / name)
    out = {}
    for kind in (*KINDS, "all"):
        subset = [n for n in names if kind == "all" or n.startswith(kind + "_")]
        score = evaluate(results, annotations, subset).global_row()
        base = evaluate(None, annotations, subset).global_row()
        out[kind] = {"clips": len(subset), "jf": score["J&F-Mean"], "j": score["J-Mean"],
                     "f": score["F-Mean"], "copy_first_jf": base["J&F-Mean"],
                     "copy_first_j": base["J-Mean"], "copy_first_f": base["F-Mean"]}
    return out


def plot(runs: dict[str, Path], path: Path, baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for (name, folder), color in zip(runs.items(), colors, strict=False):
        records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        losses = [(r["iter"], r["loss"]) for r in records if "loss" in r]
        vals = [(r["iter"], r["val_jf"]) for r in records if "val_jf" in r]
        it, loss = np.array(losses).T
        window = 50
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(it + offset, loss, alpha=0.2, color=color)
        ax_loss.plot(it[window - 1:] + offset, smooth, color=color,
                     label=f"{name} (mean of {window})")
        if vals:
            vi, vj = np.array(vals).T
            ax_val.plot(vi + offset, vj, marker="o", color=color, label=name)
        offset += int(it[-1])
    ax_val.axhline(baseline, color="gray", linestyle="--", label="copy the first mask")
    ax_loss.set(xlabel="iteration", ylabel="poly-1 cross-entropy", yscale="log",
                title="training loss")
    ax_val.set(xlabel="iteration", ylabel="J&F", ylim=(0, 1),
               title="validation J&F (8 clips, 240x432)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/default_student"))
    parser.add_argument("--data", type=Path, default=None, help="Where the clips go "
                        "(default: OUT/data).")
    parser.add_argument("--plot", type=Path, default=None, help="Curves PNG "
                        "(default: OUT/curves.png).")
    parser.add_argument("--joint", action="store_true", help="Stage 4 after stage 3: the "
                        "objects of a clip trained jointly.")
    parser.add_argument("--stage3", type=Path, default=None, help="Stage 3's weights "
                        "(e.g. mvos-synth-noaspp-v2's file): only stage 4 is trained, from "
                        "these (implies --joint).")
    args = parser.parse_args()
    data = args.data or args.out / "data"
    start = time.perf_counter()
    sets = {name: make_set(data, name) for name in SETS}
    seconds = {"data": time.perf_counter() - start}
    init = None
    runs = {}
    stages = {**STAGES, **JOINT} if args.joint else STAGES
    if args.stage3 is not None:
        init, stages = args.stage3, JOINT
    for name, stage in stages.items():
        out = args.out / name
        settings = TrainSettings(out=out, data=(sets["train"],), val=sets["val"], init=init,
                                 **{**COMMON, **stage})
        seconds[name] = run_stage(settings)
        init = out / "last.pt"
        runs[name] = out
    val_baseline = evaluate(None, sets["val"] / "Annotations" / "480p").global_row()
    plot(runs, args.plot or args.out / "curves.png", val_baseline["J&F-Mean"])
    start = time.perf_counter()
    scores = held_out(student_backend(init), sets["test"], args.out / "test_results")
    seconds["test"] = time.perf_counter() - start
    report = {"checkpoint": str(init), "scores": scores,
              "val_copy_first_jf": val_baseline["J&F-Mean"], "seconds": seconds}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
