"""MobileVOS's Table-5 loss ablation with the shipped student's recipe (train_default.py).

1. The data of the shipped recipe (train_default's sets: training, validation, and the
   held-out test clips at 480x854; the same seeds, written once).
2. The infinite-memory teacher trained the same way as the student: the recipe's three
   stages (pairs, 3-frame clips with a cosine rate, 192x320 crops), every setting as the
   student's, cross-entropy only (the teacher has no teacher).
3. mobilenetv2-noaspp: stage 1 (pairs, cross-entropy) shared by every arm, as the
   paper's students share their pretrained initialisation; then stages 2 and 3 three
   ways, the same iterations, crops and seeds, only the loss differs: cross-entropy only
   (this arm is the shipped recipe itself); + logit distillation; + the representation
   loss (omega 0.95, the paper's value for the MobileNetV2 students). The distilling arms
   read the teacher's stage-3 weights.
4. Scores the teacher (memory of every frame, never trimmed) and the three students
   (queue 2) on the held-out clips at 480x864, per clip kind, beside copy-the-first-mask,
   through mvos-run's runner and mvos-eval's J&F. Each network's scores are kept beside its
   masks (``test_results/<name>.json``) and reused while its checkpoint and the test clips'
   folder are unchanged.

``--seed-offset K`` trains the three arms again with every student seed of stages 2 and 3
moved by K (same shared stage 1, same teacher), into ``arms_seedK/``.
``--scale F`` multiplies every stage's iterations (teacher's and students' alike) by F and
validates once, at each stage's end: the same table on a smaller budget (the full one is
about 11 hours of two CPU cores). An output folder keeps the scale it was started with.
Finished stages are skipped and an interrupted one resumes (run it again), so the run can
span several sittings.

``--arms`` picks the arms to train (and score); the teacher is trained only when a picked arm
distils from it, or to score it. ``--threads`` sets torch's threads. Each stage is trained
under a lock (``<stage>.lock`` beside its folder), so two runs can share the work on two
cores: a run that reaches a stage another is training waits for it, then skips it. On this
machine two one-thread runs side by side do about 1.8 times the work an hour of one
two-thread run (stage-2 seconds an iteration: cross-entropy 1.03 and + logit 2.04 side by
side, against 0.99 and 1.70 for a two-thread run alone).

    python benchmarks/train_ablation.py --out results/ablation
    # or, sharing the two cores (then the same command without --train-only scores):
    python benchmarks/train_ablation.py --out results/ablation --train-only --threads 1 \
        --arms ce+logit ce+logit+repr &
    python benchmarks/train_ablation.py --out results/ablation --train-only --threads 1 \
        --arms ce ce+logit+repr
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from train_default import (
    COMMON,
    MODEL_SIZE,
    SETS,
    STAGES,
    STUDENT,
    held_out,
    make_set,
    run_stage,
    student_backend,
)

from mobilevos_deploy.train.loop import TEACHER, TrainSettings
from mobilevos_deploy.train.losses import LossConfig
from mobilevos_deploy.train.teacher import load_teacher
from mobilevos_deploy.train.validate import TeacherBackend

ARMS = {"ce": ("cross-entropy only", LossConfig(logit=False, repr=False)),
        "ce+logit": ("+ logit distillation", LossConfig(logit=True, repr=False)),
        "ce+logit+repr": ("+ representation loss", LossConfig(logit=True, repr=True))}


def arms_folder(out: Path, seed_offset: int) -> Path:
    """Where the arms of ``--seed-offset seed_offset`` go."""
    return out / (f"arms_seed{seed_offset}" if seed_offset else "arms")


def scaled(stage: dict, scale: float) -> dict:
    """``stage`` with its iterations times ``scale``; below 1, one validation at its end and
    a checkpoint every third of it (so an interrupted stage resumes)."""
    if scale == 1:
        return stage
    iters = max(1, round(stage["iters"] * scale))
    return {**stage, "iters": iters, "val_every": iters, "save_every": max(1, -(-iters // 3))}


def check_scale(out: Path, scale: float) -> None:
    """An output folder holds one budget: refuses to resume it at another scale."""
    marker = out / "scale.json"
    started = json.loads(marker.read_text())["scale"] if marker.is_file() else (
        1.0 if (out / "teacher").is_dir() else None)  # folders from before --scale: full
    if started is not None:
        if started != scale:
            raise SystemExit(f"error: {out} was started with --scale {started}, not {scale}; "
                             f"pass --scale {started} to resume it or another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"scale": scale}) + "\n")


@contextlib.contextmanager
def stage_lock(folder: Path) -> Iterator[None]:
    """Holds ``<folder>.lock`` while a stage trains; waits while another run holds it.
    The kernel drops the lock when its holder exits, however it exits."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[ablation] another run is training {folder}; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def scored(checkpoint: Path, backend: Callable[[], object], test: Path, results: Path) -> dict:
    """held_out's scores of ``checkpoint`` on ``test``, kept in ``<results>.json`` and reused
    while the checkpoint's bytes and the test folder are unchanged (one scoring of the teacher
    serves every seed's table)."""
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    record = results.with_name(results.name + ".json")
    if record.is_file():
        kept = json.loads(record.read_text())
        if (kept["sha256"], kept["test"]) == (digest, str(test)):
            print(f"[ablation] {checkpoint} scored before: {record}", flush=True)
            return kept["scores"]
        record.unlink()  # its masks are about to be overwritten; the record goes first
    scores = held_out(backend(), test, results)
    record.write_text(json.dumps({"checkpoint": str(checkpoint), "sha256": digest,
                                  "test": str(test), "scores": scores}, indent=2) + "\n")
    return scores


def train_chain(out: Path, stages: dict[str, dict], data: Path, val: Path, init: Path | None,
                seconds: dict[str, float], label: str) -> Path:
    """The named stages one after another, each from the last one's weights; returns the
    final ``last.pt``."""
    for name, stage in stages.items():
        settings = TrainSettings(out=out / name, data=(data,), val=val, init=init,
                                 **{**COMMON, **stage})
        print(f"[ablation] {label} {name}: {settings.out}", flush=True)
        with stage_lock(settings.out):
            seconds[f"{label} {name}"] = run_stage(settings)
        init = settings.out / "last.pt"
    return init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--data", type=Path, default=None, help="Where the clips go "
                        "(default: OUT/data; train_default's data folder can be shared).")
    parser.add_argument("--seed-offset", type=int, default=0, help="Moves the students' "
                        "stage-2 and stage-3 seeds (a second seed of the three arms).")
    parser.add_argument("--train-only", action="store_true", help="Train, do not score.")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="The arms to train and score, in this order (default: all).")
    parser.add_argument("--threads", type=int, default=2, help="torch's threads (default 2).")
    parser.add_argument("--scale", type=float, default=1.0, help="Every stage's iterations "
                        "times this (default 1: the recipe's budget); one validation per stage "
                        "below 1.")
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if len(set(args.arms)) != len(args.arms):
        parser.error("--arms names an arm twice")
    check_scale(args.out, args.scale)
    torch.set_num_threads(args.threads)
    stages = {name: scaled(stage, args.scale) for name, stage in STAGES.items()}
    data = args.data or args.out / "data"
    sets = {name: make_set(data, name) for name in SETS}
    seconds: dict[str, float] = {}
    teacher_stages = {name: {**stage, "model": TEACHER} for name, stage in stages.items()}
    teacher = functools.cache(lambda: train_chain(  # trained (or found) when first needed
        args.out / "teacher", teacher_stages, sets["train"], sets["val"], None, seconds, "teacher"))
    shared = train_chain(args.out / "student", {"stage1": stages["stage1"]}, sets["train"],
                         sets["val"], None, seconds, "student")
    arms_dir = arms_folder(args.out, args.seed_offset)
    finals = {}
    for key in args.arms:
        loss = ARMS[key][1]
        arm = {name: {**stages[name], "loss": loss, "seed": stages[name].get(
                   "seed", COMMON["seed"]) + args.seed_offset,
               **({"teacher": teacher()} if loss.needs_teacher else {})}
               for name in ("stage2", "stage3")}
        finals[key] = train_chain(arms_dir / key, arm, sets["train"], sets["val"], shared,
                                  seconds, key)
    print(json.dumps({"train_seconds_this_call": seconds}, indent=2), flush=True)
    if args.train_only:
        return
    rows = {}
    start = time.perf_counter()
    rows["teacher (memory of every frame)"] = scored(
        teacher(), lambda: TeacherBackend(load_teacher(teacher(), mem_every=1), *MODEL_SIZE),
        sets["test"], args.out / "test_results" / "teacher")
    for key in args.arms:
        rows[f"{STUDENT}, {ARMS[key][0]}"] = scored(
            finals[key], functools.partial(student_backend, finals[key]), sets["test"],
            arms_dir / "test_results" / key)
    seconds["scoring"] = time.perf_counter() - start
    lines = ["| network | J&F all | J all | F all | J&F scene | J&F shapes |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {s['all']['jf']:.3f} | {s['all']['j']:.3f} | {s['all']['f']:.3f} "
              f"| {s['scene']['jf']:.3f} | {s['shapes']['jf']:.3f} |" for name, s in rows.items()]
    base = next(iter(rows.values()))
    copy = {kind: base[kind] for kind in ("all", "scene", "shapes")}
    lines.append(f"| copy the first mask | {copy['all']['copy_first_jf']:.3f} "
                 f"| {copy['all']['copy_first_j']:.3f} | {copy['all']['copy_first_f']:.3f} "
                 f"| {copy['scene']['copy_first_jf']:.3f} "
                 f"| {copy['shapes']['copy_first_jf']:.3f} |")
    table = "\n".join(lines)
    print(table)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "checkpoints": {"teacher": str(teacher()), **{k: str(v) for k, v in finals.items()}},
              "settings": {"common": json.loads(json.dumps(COMMON, default=str)),
                           "scale": args.scale,
                           "stages": json.loads(json.dumps(stages, default=str)),
                           "arms": {k: dataclasses.asdict(ARMS[k][1]) for k in args.arms}},
              "seconds_this_call": seconds}
    (arms_dir / "table.md").write_text(table + "\n")
    (arms_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
