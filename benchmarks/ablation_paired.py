"""How far apart the Table-5 arms are, beside how far the test clips alone move them.

Reads the masks train_ablation.py wrote for the held-out clips (the teacher's and each
arm's ``test_results``) and compares every network with the cross-entropy arm on the same
clips: the J&F difference, a 95% interval from resampling the clips (bootstrap, the
objects of a clip kept together, J&F recomputed as mvos-eval computes it: the mean over
objects of (mean J + mean F) / 2), and on how many clips the network is ahead. The
interval covers the choice of test clips only, not the training seed: a second seed
(``train_ablation.py --seed-offset``) measures that.

    python benchmarks/ablation_paired.py --out results/ablation
    # each arm of the second seed against the same arm of the first:
    python benchmarks/ablation_paired.py --out results/ablation --seed-offset 1 --versus-seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from train_ablation import ARMS, arms_folder

from mobilevos_deploy.metrics.evaluate import evaluate


def per_object(results: Path, annotations: Path) -> dict[str, list[float]]:
    """Per clip, each object's (mean J + mean F) / 2; their mean is mvos-eval's J&F (checked)."""
    out: dict[str, list[float]] = {}
    result = evaluate(results, annotations)
    for score in result.scores:
        out.setdefault(score.sequence, []).append(
            (float(np.nanmean(score.j)) + float(np.nanmean(score.f))) / 2)
    mean = float(np.mean([v for values in out.values() for v in values]))
    if abs(mean - result.global_row()["J&F-Mean"]) > 1e-9:
        raise SystemExit(f"error: per-object J&F {mean} is not mvos-eval's "
                         f"{result.global_row()['J&F-Mean']}")
    return out


def compare(net: dict[str, list[float]], base: dict[str, list[float]], draws: int,
            seed: int) -> dict:
    """``net`` minus ``base`` on the same clips and objects."""
    if net.keys() != base.keys() or any(len(net[c]) != len(base[c]) for c in net):
        raise SystemExit("error: the two result sets do not hold the same clips and objects")
    clips = sorted(net)
    diffs = [np.array(net[c]) - np.array(base[c]) for c in clips]
    sums = np.array([d.sum() for d in diffs])
    counts = np.array([len(d) for d in diffs])
    picks = np.random.default_rng(seed).integers(0, len(clips), size=(draws, len(clips)))
    boot = sums[picks].sum(1) / counts[picks].sum(1)
    per_clip = np.array([d.mean() for d in diffs])
    return {"diff": float(sums.sum() / counts.sum()),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "clips_ahead": int((per_clip > 0).sum()), "clips_behind": int((per_clip < 0).sum()),
            "clips": len(clips)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="train_ablation.py's --out.")
    parser.add_argument("--data", type=Path, default=None, help="Its --data (default OUT/data).")
    parser.add_argument("--seed-offset", type=int, default=0, help="Which arms (its "
                        "--seed-offset).")
    parser.add_argument("--versus-seed", type=int, default=None, metavar="K", help="Instead, "
                        "each arm against the same arm trained at --seed-offset K: how far the "
                        "training seed alone moves it.")
    parser.add_argument("--draws", type=int, default=10000)
    args = parser.parse_args()
    annotations = (args.data or args.out / "data") / "test" / "Annotations" / "480p"
    arms_dir = arms_folder(args.out, args.seed_offset)
    nets = {"teacher": args.out / "test_results" / "teacher",
            **{key: arms_dir / "test_results" / key for key in ARMS}}
    if args.versus_seed is not None:
        nets = {**{key: arms_dir / "test_results" / key for key in ARMS},
                **{f"{key}@{args.versus_seed}": arms_folder(args.out, args.versus_seed)
                   / "test_results" / key for key in ARMS}}
    missing = [str(p) for p in nets.values() if not p.is_dir()]
    if missing:
        raise SystemExit(f"error: no masks in {', '.join(missing)}; run train_ablation.py "
                         f"--out {args.out} (without --train-only) first")
    scores = {name: per_object(folder, annotations) for name, folder in nets.items()}
    if args.versus_seed is None:
        rows = {name: compare(scores[name], scores["ce"], args.draws, seed=0)
                for name in nets if name != "ce"}
        head = "against cross-entropy only"
    else:
        rows = {key: compare(scores[key], scores[f"{key}@{args.versus_seed}"], args.draws,
                             seed=0) for key in ARMS}
        head = f"seed offset {args.seed_offset} against {args.versus_seed}, same arm"
    lines = [f"| {head} | J&F difference | 95% interval (clips resampled) "
             "| clips ahead / behind |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['diff']:+.3f} | {r['ci95'][0]:+.3f} .. {r['ci95'][1]:+.3f} "
              f"| {r['clips_ahead']} / {r['clips_behind']} of {r['clips']} |"
              for name, r in rows.items()]
    print("\n".join(lines))
    name = "paired.json" if args.versus_seed is None else f"versus_seed{args.versus_seed}.json"
    (arms_dir / name).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
