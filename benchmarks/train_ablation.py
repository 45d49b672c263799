"""The loss ablation of MobileVOS's Table 5, on generated data and a small CPU budget.

1. Generates moving textured shapes with occluders (mvos-synth --kind shapes): a training
   set, a validation set (for the soup's ranking) and a held-out test set.
2. Trains the infinite-memory teacher first (cross-entropy only).
3. Trains mobilenetv2-noaspp three ways from one initialisation, for the same
   iterations: cross-entropy only; + logit distillation; + the representation loss.
4. Scores every network on the held-out test clips (J&F, first mask given, queue 2 for the
   students) and a greedy soup of the three students ranked on the validation clips.

Run folders are reused: a finished run is not trained again, an interrupted one resumes.

    python benchmarks/train_ablation.py --out results/ablation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from mobilevos_deploy.data.synthetic import shapes_clip, write_davis_clip
from mobilevos_deploy.model.checkpoint import load_checkpoint
from mobilevos_deploy.train.loop import STATE, TrainSettings, train
from mobilevos_deploy.train.losses import LossConfig
from mobilevos_deploy.train.soup import greedy_soup
from mobilevos_deploy.train.teacher import load_teacher
from mobilevos_deploy.train.validate import validate

STUDENT = "mobilenetv2-noaspp"
ARMS = {"cross-entropy only": "ce", "+ logit distillation": "ce+logit",
        "+ representation loss": "ce+logit+repr"}


def make_set(root: Path, clips: int, frames: int, size: int, seed: int) -> Path:
    if not (root / "JPEGImages").is_dir():
        for i in range(clips):
            write_davis_clip(shapes_clip(frames, size, size, seed=seed + i), root, f"s{seed + i}")
    return root


def run(settings: TrainSettings) -> float:
    """Trains (or resumes, or skips a finished run); returns the wall time spent now."""
    done = settings.out / "last.pt"
    if done.is_file() and (settings.out / f"ckpt_{settings.iters:06d}.pt").is_file():
        return 0.0
    resume = (settings.out / STATE).is_file()
    start = time.perf_counter()
    train(settings, resume=resume, progress=False, echo=print)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--train-clips", type=int, default=64)
    parser.add_argument("--test-clips", type=int, default=24)
    parser.add_argument("--teacher-iters", type=int, default=1500)
    parser.add_argument("--student-iters", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = args.out
    size = (args.size, args.size)
    train_set = make_set(out / "data" / "train", args.train_clips, 16, args.size, 0)
    val_set = make_set(out / "data" / "val", 8, 16, args.size, 50_000)
    test_set = make_set(out / "data" / "test", args.test_clips, 16, args.size, 100_000)
    common = dict(data=(train_set,), size=size, batch=args.batch, lr=args.lr,
                  save_every=250, seed=args.seed)
    seconds = {}
    teacher_run = TrainSettings(model="teacher", out=out / "teacher", iters=args.teacher_iters,
                                loss=LossConfig(logit=False, repr=False), **common)
    seconds["teacher"] = run(teacher_run)
    students = {}
    for label, loss_name in ARMS.items():
        terms = loss_name.split("+")
        loss = LossConfig(logit="logit" in terms, repr="repr" in terms)
        settings = TrainSettings(model=STUDENT, out=out / loss_name, iters=args.student_iters,
                                 loss=loss, teacher=teacher_run.out / "last.pt", **common)
        seconds[label] = run(settings)
        students[label] = settings.out / "last.pt"
    soup_path = out / "soup.pt"
    soup = greedy_soup(list(students.values()), val_set, size, soup_path)
    rows = []
    teacher = load_teacher(teacher_run.out / "last.pt", mem_every=1)
    score = validate(teacher, test_set, size)
    rows.append(("teacher (infinite memory, every frame)", score))
    for label, path in students.items():
        rows.append((f"{STUDENT}, {label}", validate(load_checkpoint(path).student,
                                                       test_set, size, 2)))
    kept = [i.path.parent.name for i in soup.ingredients if i.kept]
    rows.append((f"greedy soup of the three ({' + '.join(kept)})",
                 validate(load_checkpoint(soup_path).student, test_set, size, 2)))
    lines = ["| network | J&F | J | F |", "|---|---|---|---|"]
    lines += [f"| {name} | {s.jf:.3f} | {s.j:.3f} | {s.f:.3f} |" for name, s in rows]
    table = "\n".join(lines)
    print(table)
    record = {"args": {k: str(v) for k, v in vars(args).items()},
              "rows": [{"network": n, **dataclasses.asdict(s)} for n, s in rows],
              "train_seconds_this_call": seconds}
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
