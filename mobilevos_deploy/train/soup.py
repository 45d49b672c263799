"""Greedy model soup (Wortsman et al. 2022, as MobileVOS uses it): rank the checkpoints
of one variant by validation J&F, then add each, best first, to the running average of
weights only if the averaged student does not score lower."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..files import check_writable
from ..model.checkpoint import LoadedCheckpoint, load_checkpoint, non_finite, save_checkpoint
from ..model.student import build_student
from .validate import Score, check_val_root, validate


@dataclass(frozen=True)
class Ingredient:
    path: Path
    score: Score  # alone
    kept: bool
    soup_score: Score | None  # the soup's score with it added (None: the first one)


@dataclass(frozen=True)
class SoupResult:
    out: Path
    variant: str
    ingredients: list[Ingredient]  # in ranked order
    score: Score  # of the written soup


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor; integer buffers (BatchNorm's
    num_batches_tracked) are taken from the first state."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        else:
            out[key] = first.clone()
    return out


def _same_variant(loaded: list[LoadedCheckpoint]) -> None:
    first = loaded[0]
    for other in loaded[1:]:
        if other.variant != first.variant or other.config != first.config:
            raise UserError(f"{other.path} is a {other.variant!r} checkpoint, {first.path} a "
                            f"{first.variant!r} one; a soup averages checkpoints of one variant")


def greedy_soup(checkpoints: list[Path], val: Path, size: tuple[int, int], out: Path,
                queue: int = 2, echo=print) -> SoupResult:
    if len(checkpoints) < 2:
        raise UserError("a soup needs at least two checkpoints")
    check_val_root(val)
    if not Path(out).parent.is_dir():
        raise UserError(f"{Path(out).parent}: no such folder for --out")
    check_writable(out, "--out")  # now, not after the scoring
    if Path(out).resolve() in {Path(c).resolve() for c in checkpoints}:
        raise UserError(f"--out {out} is one of the checkpoints to mix; write the soup to "
                        "another file")
    loaded = [load_checkpoint(p) for p in checkpoints]
    seen: dict[str, Path] = {}
    for item in loaded:  # the same weights twice would count as two ingredients
        if item.sha256 in seen:
            raise UserError(f"{item.path} and {seen[item.sha256]} hold the same bytes; give "
                            "each checkpoint once")
        seen[item.sha256] = item.path
    _same_variant(loaded)
    variant, cfg = loaded[0].variant, loaded[0].config
    model = build_student(cfg, seed=None, centre=False)

    def score_of(state: dict[str, torch.Tensor]) -> Score:
        model.load_state_dict(state, strict=True)
        return validate(model, val, size, queue)

    alone = []
    for item in loaded:
        alone.append(validate(item.student, val, size, queue))
        echo(f"{item.path}: J&F {alone[-1].jf:.4f}")
    order = sorted(range(len(loaded)), key=lambda i: alone[i].jf, reverse=True)
    states = [loaded[i].student.state_dict() for i in order]
    soup = [states[0]]
    best = alone[order[0]]
    ingredients = [Ingredient(loaded[order[0]].path, best, True, None)]
    for rank, i in enumerate(order[1:], start=1):
        trial = score_of(average_state(soup + [states[rank]]))
        kept = trial.jf >= best.jf
        echo(f"+ {loaded[i].path}: soup J&F {trial.jf:.4f} "
             f"({'kept' if kept else 'left out'}, best {best.jf:.4f})")
        if kept:
            soup.append(states[rank])
            best = trial
        ingredients.append(Ingredient(loaded[i].path, alone[i], kept, trial))
    mixed = average_state(soup)
    bad = non_finite(mixed)
    if bad:
        raise UserError(f"the soup's average overflowed to non-finite values in "
                        f"{', '.join(bad[:3])}; nothing was written")
    model.load_state_dict(mixed, strict=True)
    try:
        save_checkpoint(out, model, variant)
    except OSError as exc:  # the scoring is not lost: the soup goes where it can
        rescue = Path(tempfile.mkdtemp(prefix="mvos-soup-")) / Path(out).name
        save_checkpoint(rescue, model, variant)
        raise UserError(f"cannot write {out} ({exc.strerror}); the soup was saved to "
                        f"{rescue}") from None
    return SoupResult(Path(out), variant, ingredients, best)
