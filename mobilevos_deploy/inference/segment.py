"""The streaming loop of mvos-run: letterbox to the model size, K objects, soft aggregation.

Frames of any size are scaled to fit the model's H x W with their aspect ratio kept and
centred on a zero border (a letterbox); masks go the same way with nearest-neighbour
sampling, and each object's probability comes back by cropping the border and scaling
to the frame's size. Objects are the ids 1..254 of the first mask (255 is void); each
has its own memory state. Their probabilities are merged with STCN's soft aggregation:
background = prod_k (1 - p_k), every probability clamped to [1e-7, 1 - 1e-7] and turned
into the logit log(p / (1 - p)), a softmax over background + objects, then argmax.
The same aggregation of the model-size probabilities is what each object's memory is
written from, with the other objects' sum beside it (the backend does that: STCN's
multi-object semantics, mobilevos_deploy.model.objects).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import UserError
from .backends import Backend

VOID = 255


@dataclass(frozen=True)
class Letterbox:
    src_h: int
    src_w: int
    height: int  # model size
    width: int

    @property
    def inner(self) -> tuple[int, int, int, int]:
        """(top, left, inner height, inner width) of the frame inside the model input."""
        scale = min(self.height / self.src_h, self.width / self.src_w)
        ih = min(self.height, max(1, round(self.src_h * scale)))
        iw = min(self.width, max(1, round(self.src_w * scale)))
        return (self.height - ih) // 2, (self.width - iw) // 2, ih, iw

    def _place(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        top, left, ih, iw = self.inner
        out = np.zeros((self.height, self.width, *image.shape[2:]), image.dtype)
        if (ih, iw) != image.shape[:2]:
            image = cv2.resize(image, (iw, ih), interpolation=interpolation)
        out[top : top + ih, left : left + iw] = image
        return out

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 → 1 x 3 x H x W float32 in [0, 1]."""
        placed = self._place(rgb, cv2.INTER_AREA if rgb.shape[0] > self.height
                             else cv2.INTER_LINEAR)
        return np.ascontiguousarray(placed.transpose(2, 0, 1)[None], np.float32) / 255.0

    def mask(self, binary: np.ndarray) -> np.ndarray:
        """H x W bool → 1 x 1 x H x W float32."""
        placed = self._place(binary.astype(np.uint8), cv2.INTER_NEAREST)
        return placed[None, None].astype(np.float32)

    def back(self, prob: np.ndarray) -> np.ndarray:
        """Model-size H x W probability → the frame's size."""
        top, left, ih, iw = self.inner
        inner = np.ascontiguousarray(prob[top : top + ih, left : left + iw], np.float32)
        if (ih, iw) == (self.src_h, self.src_w):
            return inner
        return cv2.resize(inner, (self.src_w, self.src_h), interpolation=cv2.INTER_LINEAR)


def object_ids(first_mask: np.ndarray) -> list[int]:
    return sorted(int(v) for v in np.unique(first_mask) if 0 < v < VOID)


def aggregate(probs: list[np.ndarray], ids: list[int]) -> np.ndarray:
    """STCN soft aggregation of K object probabilities → H x W uint8 id map."""
    p = np.stack(probs).astype(np.float64)
    background = np.prod(1.0 - p, axis=0, keepdims=True)
    every = np.clip(np.concatenate([background, p]), 1e-7, 1 - 1e-7)
    logits = np.log(every / (1 - every))
    labels = np.asarray([0, *ids], np.uint8)
    # the softmax over background + objects keeps the order of the logits: its argmax is theirs
    return labels[logits.argmax(axis=0)]


@dataclass(frozen=True)
class SegmentResult:
    frames: int
    objects: list[int]
    step_ms: list[float]  # wall time of frames 1..T-1, every object, milliseconds


def segment(backend: Backend, frames: Iterable[np.ndarray], first_mask: np.ndarray,
            sink: Callable[[int, np.ndarray, np.ndarray], None]) -> SegmentResult:
    """Segment a clip; ``sink(t, frame, ids)`` receives each frame and its H x W id map.

    Frame 0's ids are the given mask (void kept as 255), as in DAVIS result folders.
    """
    ids = object_ids(first_mask)
    if not ids:
        raise UserError("the first mask holds no object ids (only 0 background and 255 "
                        "void); mark each object with its id 1..K")
    step_ms: list[float] = []
    states: list = []
    box: Letterbox | None = None
    count = 0
    for t, rgb in enumerate(frames):
        if box is None:
            if rgb.shape[:2] != first_mask.shape:
                raise UserError(f"frames are {rgb.shape[0]}x{rgb.shape[1]} but the first mask "
                                f"is {first_mask.shape[0]}x{first_mask.shape[1]}; give the "
                                "mask of the first frame at the frames' size")
            box = Letterbox(*rgb.shape[:2], backend.height, backend.width)
            frame = box.frame(rgb)
            masks = [box.mask(first_mask == k) for k in ids]
            lost = [(k, int((first_mask == k).sum())) for k, m in zip(ids, masks, strict=True)
                    if not m.any()]
            if lost:  # the model would track nothing for it, and say nothing
                top, left, ih, iw = box.inner
                raise UserError(
                    "object(s) " + ", ".join(f"{k} ({n} px)" for k, n in lost) + " vanish "
                    f"when the {box.src_h}x{box.src_w} first mask is scaled to the model's "
                    f"{ih}x{iw} (inside {backend.height}x{backend.width}); use a larger "
                    "--size, or crop the frames around the objects")
            states = backend.init(frame, masks)
            sink(t, rgb, first_mask)
        else:
            if rgb.shape[:2] != (box.src_h, box.src_w):
                raise UserError(f"frame {t} is {rgb.shape[0]}x{rgb.shape[1]}, the first is "
                                f"{box.src_h}x{box.src_w}; all frames must share one size")
            frame = box.frame(rgb)
            start = time.perf_counter()
            probs, states = backend.step(frame, states)
            step_ms.append((time.perf_counter() - start) * 1e3)
            bad = sum(int((~np.isfinite(p)).sum()) for p in probs)
            if bad:  # aggregation's argmax would quietly make them background
                raise UserError(f"frame {t}: the {backend.name} backend returned {bad} "
                                "non-finite probabilities (NaN or inf); the masks would be "
                                "empty. Check the model with mvos-export's gates (fp16 "
                                "overflow?), or run --backend torch")
            sink(t, rgb, aggregate([box.back(p) for p in probs], ids))
        count += 1
    if count == 0:
        raise UserError("no frames to segment")
    return SegmentResult(count, ids, step_ms)
