"""The DAVIS semi-supervised metrics: region similarity J and boundary accuracy F.

Written from the published definitions (Perazzi et al., CVPR 2016; Pont-Tuset et al.,
arXiv 1704.00675) and checked fact by fact against the davis2017-evaluation tool:

- J: |S ∩ G| / |S ∪ G| over non-void pixels; an empty union gives 1.
- F: boundary maps of S and G (a pixel is on the boundary when it differs from its east,
  south or south-east neighbour, outside the image counting as background; the last row
  compares east only, the last column south only, the bottom-right pixel is never on it),
  each matched within a disk of radius ceil(0.008 x image diagonal) of the other:
  precision = matched S-boundary / S-boundary, recall likewise for G, F = 2PR / (P + R),
  with P = R = 1 when neither has a boundary, P = 1, R = 0 when S has none and P = 0,
  R = 1 when G has none; F = 0 when P + R = 0. Void pixels are cleared from both masks
  before their boundaries are taken.
- Per object over the evaluated frames (the first and last frame of a sequence are not
  evaluated): Mean, Recall = fraction of frames with a value > 0.5, Decay = mean of the
  first quarter minus mean of the last quarter, quarters cut at
  round(linspace(1, T, 5)) - 1 and each including its end frame.

One difference from the tool, by choice: its semi-supervised pipeline drops the void map
before scoring (so 255 pixels count as background); here void is ignored as the metric
defines it, and ``use_void=False`` reproduces the tool's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal
VOID = 255


def region_similarity(mask: np.ndarray, truth: np.ndarray,
                      void: np.ndarray | None = None) -> float:
    """J of one frame: boolean H x W masks, optional boolean void map."""
    keep = ~void if void is not None else np.ones(mask.shape, bool)
    union = np.count_nonzero((mask | truth) & keep)
    if union == 0:
        return 1.0
    return np.count_nonzero(mask & truth & keep) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a boolean H x W mask (see the module docstring)."""
    east = np.zeros_like(mask)
    south = np.zeros_like(mask)
    south_east = np.zeros_like(mask)
    east[:, :-1] = mask[:, 1:]
    south[:-1, :] = mask[1:, :]
    south_east[:-1, :-1] = mask[1:, 1:]
    edge = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    edge[-1, :] = mask[-1, :] ^ east[-1, :]
    edge[:, -1] = mask[:, -1] ^ south[:, -1]
    edge[-1, -1] = False
    return edge


def disk(radius: int) -> np.ndarray:
    """uint8 (2r+1) x (2r+1) structuring element: offsets with y^2 + x^2 <= r^2."""
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (ys**2 + xs**2 <= radius**2).astype(np.uint8)


def tolerance_px(height: int, width: int) -> int:
    return math.ceil(BOUNDARY_TOLERANCE * math.hypot(height, width))


def boundary_accuracy(mask: np.ndarray, truth: np.ndarray,
                      void: np.ndarray | None = None) -> float:
    """F of one frame: boolean H x W masks, optional boolean void map."""
    if void is not None:
        mask, truth = mask & ~void, truth & ~void
    ours, theirs = boundary_map(mask), boundary_map(truth)
    element = disk(tolerance_px(*mask.shape))
    ours_near = cv2.dilate(ours.astype(np.uint8), element).astype(bool)
    theirs_near = cv2.dilate(theirs.astype(np.uint8), element).astype(bool)
    n_ours, n_theirs = np.count_nonzero(ours), np.count_nonzero(theirs)
    if n_ours == 0 and n_theirs == 0:
        return 1.0
    if n_ours == 0 or n_theirs == 0:
        return 0.0  # precision 1 / recall 0, or the other way round
    precision = np.count_nonzero(ours & theirs_near) / n_ours
    recall = np.count_nonzero(theirs & ours_near) / n_theirs
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Statistics:
    mean: float
    recall: float
    decay: float


def statistics(values: np.ndarray) -> Statistics:
    """Mean, Recall and Decay of one object's per-frame J or F (evaluated frames only)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no evaluated frames (a sequence needs at least 3 frames)")
    cuts = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    quarters = [values[cuts[i] : cuts[i + 1] + 1] for i in range(4)]
    return Statistics(float(np.nanmean(values)), float(np.nanmean(values > 0.5)),
                      float(np.nanmean(quarters[0]) - np.nanmean(quarters[3])))


@dataclass(frozen=True)
class ObjectScore:
    sequence: str
    object_id: int  # 1..K as in the annotation
    j: np.ndarray  # per evaluated frame
    f: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.object_id}"


def score_sequence(sequence: str, results: np.ndarray, truth: np.ndarray,
                   use_void: bool = True) -> list[ObjectScore]:
    """Scores of every object of one sequence.

    results, truth: T x H x W integer id maps (0 background, 1..K objects, 255 void in
    ``truth``). The objects are those of the first annotated frame; frames 0 and T-1 are
    not evaluated. A result id that is no object of frame 0 is refused (void, 255, counts as
    background; frame 0 of the results is not looked at).
    """
    if results.shape != truth.shape:
        raise ValueError(f"{sequence}: results are {results.shape}, annotations {truth.shape}")
    if truth.shape[0] < 3:
        raise ValueError(f"{sequence}: {truth.shape[0]} frames; at least 3 are needed "
                         "(the first and last are not evaluated)")
    objects = sorted(int(v) for v in np.unique(truth[0]) if 0 < v < VOID)
    # frame 0 is the given annotation (mvos-run keeps its void 255) and is not scored
    extra = sorted(int(v) for v in np.unique(results[1:]) if v not in (0, VOID, *objects))
    if extra:
        raise ValueError(f"{sequence}: result ids {extra} are not objects of the first "
                         f"annotation (objects {objects})")
    inner_res, inner_truth = results[1:-1], truth[1:-1]
    scores = []
    for k in objects:
        j, f = [], []
        for res, gt in zip(inner_res, inner_truth, strict=True):
            void = (gt == VOID) if use_void else None
            j.append(region_similarity(res == k, gt == k, void))
            f.append(boundary_accuracy(res == k, gt == k, void))
        scores.append(ObjectScore(sequence, k, np.array(j), np.array(f)))
    return scores


@dataclass(frozen=True)
class Summary:
    """The global row: each statistic averaged over all objects of all sequences."""

    j: Statistics
    f: Statistics

    @property
    def jf(self) -> float:
        return (self.j.mean + self.f.mean) / 2


def summarise(scores: list[ObjectScore]) -> Summary:
    if not scores:
        raise ValueError("no objects to summarise")
    js = [statistics(s.j) for s in scores]
    fs = [statistics(s.f) for s in scores]

    def average(stats: list[Statistics]) -> Statistics:
        return Statistics(*(float(np.mean([getattr(s, field) for s in stats]))
                            for field in ("mean", "recall", "decay")))

    return Summary(average(js), average(fs))
