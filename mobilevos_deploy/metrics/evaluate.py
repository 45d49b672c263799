"""evaluate: result masks against DAVIS annotations (or another backend's masks).

Layouts: ``annotations`` holds one folder of indexed PNGs per sequence (DAVIS
``Annotations/480p``), or the PNGs of one sequence directly; ``results`` mirrors it
(``results/<sequence>/<frame>.png``, or the PNGs directly for one sequence). Every
annotated frame must have a result of the same name and size. The scores are those of
:mod:`mobilevos_deploy.metrics.davis`; the CSVs have the columns of the official tool's
``global_results`` and ``per-sequence_results`` files.

``results=None`` scores the copy-the-first-mask baseline: every frame's result is the
first annotation (void as background), the floor a tracker must clear.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.media import read_mask
from ..errors import UserError
from ..files import atomic_path
from .davis import ObjectScore, Summary, score_sequence, summarise

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass(frozen=True)
class EvalResult:
    scores: list[ObjectScore]
    summary: Summary

    def global_row(self) -> dict[str, float]:
        s = self.summary
        values = (s.jf, s.j.mean, s.j.recall, s.j.decay, s.f.mean, s.f.recall, s.f.decay)
        return dict(zip(GLOBAL_COLUMNS, values, strict=True))

    def sequence_rows(self) -> list[dict[str, object]]:
        return [{"Sequence": s.name, "J-Mean": float(np.mean(s.j)),
                 "F-Mean": float(np.mean(s.f))} for s in self.scores]


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def _sequences(truth: Path, results: Path | None, only: list[str] | None
               ) -> list[tuple[str, Path, Path | None]]:
    """(name, truth folder, results folder, or None for the baseline) per sequence."""
    if not truth.is_dir():
        raise UserError(f"{truth}: no such annotation folder")
    if results is not None and not results.is_dir():
        raise UserError(f"{results}: no such results folder")
    subfolders = [d for d in truth.iterdir() if d.is_dir()]
    if _pngs(truth) and subfolders:  # which one did the user mean?
        raise UserError(f"{truth} holds both sequence folders ({subfolders[0].name}, ...) and "
                        f"PNGs ({_pngs(truth)[0].name}, ...); give one sequence's folder, or "
                        "the folder of sequence folders without stray PNGs")
    if _pngs(truth):  # one sequence, its PNGs directly in the folder
        name = truth.name
        res = results if (results is None or _pngs(results)
                          or not (results / name).is_dir()) else results / name
        pairs = [(name, truth, res)]
    else:
        pairs = [(d.name, d, None if results is None else results / d.name)
                 for d in sorted(truth.iterdir()) if d.is_dir()]
    if only:
        known = {p[0] for p in pairs}
        missing = [s for s in only if s not in known]
        if missing:
            raise UserError(f"sequences {missing} are not in {truth} (it has "
                            f"{', '.join(sorted(known)) or 'none'})")
        pairs = [p for p in pairs if p[0] in only]
    if not pairs:
        raise UserError(f"{truth}: no annotated sequences (expected <sequence>/00000.png ...)")
    return pairs


def _load(name: str, truth_dir: Path, res_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    files = _pngs(truth_dir)
    if not files:
        raise UserError(f"{truth_dir}: no PNG annotations")
    if res_dir is None:  # the copy-the-first-mask baseline
        truth = np.stack(_same_size([read_mask(f) for f in files], files))
        first = np.where(truth[0] == 255, 0, truth[0])
        return np.repeat(first[None], len(files), axis=0), truth
    if not res_dir.is_dir():
        raise UserError(f"{res_dir}: no results for sequence {name}")
    truth, res = [], []
    for file in files:
        mine = res_dir / file.name
        if not mine.is_file():
            raise UserError(f"{mine}: result frame missing (every annotated frame needs a "
                            "result PNG of the same name)")
        truth.append(read_mask(file))
        res.append(read_mask(mine))
        if res[-1].shape != truth[-1].shape:
            raise UserError(f"{mine} is {res[-1].shape[0]}x{res[-1].shape[1]}, its annotation "
                            f"{file} is {truth[-1].shape[0]}x{truth[-1].shape[1]}")
    return np.stack(res), np.stack(_same_size(truth, files))


def _same_size(masks: list[np.ndarray], files: list[Path]) -> list[np.ndarray]:
    """The annotations of one sequence share one size; the first that does not is named."""
    for mask, file in zip(masks, files, strict=True):
        if mask.shape != masks[0].shape:
            raise UserError(f"{file} is {mask.shape[0]}x{mask.shape[1]}, {files[0].name} of "
                            f"the same sequence {masks[0].shape[0]}x{masks[0].shape[1]}; "
                            "every annotation of a sequence has one size")
    return masks


def evaluate(results: Path | None, annotations: Path, sequences: list[str] | None = None,
             use_void: bool = True) -> EvalResult:
    """J&F of ``results`` (None: the copy-the-first-mask baseline) against ``annotations``."""
    scores: list[ObjectScore] = []
    res_root = None if results is None else Path(results)
    for name, truth_dir, res_dir in _sequences(Path(annotations), res_root, sequences):
        res, truth = _load(name, truth_dir, res_dir)
        try:
            scores += score_sequence(name, res, truth, use_void)
        except ValueError as err:
            raise UserError(str(err)) from None
    if not scores:
        raise UserError(f"{annotations}: the first annotated frames hold no objects")
    return EvalResult(scores, summarise(scores))


CSV_NAMES = ("global_results.csv", "per-sequence_results.csv")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def foreign_csvs(folder: Path) -> list[str]:
    """The result CSVs in ``folder`` that ``write_csvs`` did not write (another header): a
    user's own files of those names, which are never overwritten."""
    foreign = []
    for name, columns in zip(CSV_NAMES, (GLOBAL_COLUMNS, SEQUENCE_COLUMNS), strict=True):
        path = folder / name
        if not path.exists():
            continue
        try:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if tuple(header) != tuple(columns):
            foreign.append(name)
    return foreign


def write_csvs(result: EvalResult, folder: Path) -> tuple[Path, Path]:
    """``global_results.csv`` and ``per-sequence_results.csv`` in ``folder``, 3 decimals."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / CSV_NAMES[0], folder / CSV_NAMES[1]
    tables = ([result.global_row()], GLOBAL_COLUMNS), (result.sequence_rows(),
                                                       SEQUENCE_COLUMNS)
    for path, (rows, columns) in zip(paths, tables, strict=True):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: f"{v:.3f}" if isinstance(v, float) else v
                                 for k, v in row.items()})
    return paths
