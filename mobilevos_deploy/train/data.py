"""Training clips: short sequences from videos, or from static images with synthetic
deformations (the paper's first stage, after STCN).

A :class:`ClipBatch` is B sequences of T frames at one training size, with one target
object per sequence (binary masks; the other objects are background):
  frames  B x T x 3 x H x W  RGB in [0, 1]
  masks   B x T x H x W      1.0 on the target object
or, trained jointly (``objects`` K > 1, STCN's multi-object training), up to K objects:
  masks   B x T x K x H x W  slot 0 the target, then others of frame 0 in random order;
                             a slot with no object (or one cropped below
                             MIN_OBJECT_PIXELS in frame 0) is all zero

Video datasets are in the DAVIS layout (``JPEGImages/480p/<seq>/*.jpg`` with
``Annotations/480p/<seq>/*.png``) or the YouTube-VOS one (no ``480p`` level; only every
5th frame annotated: only frames with an annotation are sampled). Static image sets are a
folder with ``images/`` and ``masks/`` (same file stems; any non-zero mask pixel is object).

Sampling is keyed, not streamed: the clips of iteration ``i`` come from seeds derived
from (run seed, ``i``) alone (:func:`clip_keys`), so a batch is the same whether one
process draws it or N processes each draw their share (torchrun), with or without
loader workers, and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.media import read_mask
from ..errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MIN_OBJECT_PIXELS = 16  # a target must cover at least this much of frame 0 after the crop


class ClipBatch(NamedTuple):
    frames: torch.Tensor  # B x T x 3 x H x W
    masks: torch.Tensor  # B x T x H x W


@dataclass(frozen=True)
class VideoSequence:
    name: str
    frames: tuple[Path, ...]  # annotated frames only, in order
    masks: tuple[Path, ...]


def davis_level(root: Path, kind: str) -> Path:
    folder = root / kind
    return folder / "480p" if (folder / "480p").is_dir() else folder


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def find_sequences(root: Path) -> list[VideoSequence]:
    """Every sequence of a DAVIS / YouTube-VOS root, each with its annotated frames.

    Frames without an annotation are normal (YouTube-VOS annotates every 5th frame) and
    are not sampled; a sequence whose frames have no annotation at all, an annotation
    folder without frames, or an annotation without its frame is a broken root: a
    UserError names the sequences (a half-extracted archive must not silently shrink
    the training set)."""
    root = Path(root)
    images, annotations = davis_level(root, "JPEGImages"), davis_level(root, "Annotations")
    if not images.is_dir() or not annotations.is_dir():
        raise UserError(f"{root}: expected JPEGImages/ and Annotations/ (DAVIS or YouTube-VOS "
                        "layout); for still images use --static with images/ and masks/")
    image_dirs = {d.name: d for d in images.iterdir() if d.is_dir()}
    mask_dirs = {d.name for d in annotations.iterdir() if d.is_dir()}
    found, unannotated, orphan_masks = [], [], []
    for name in sorted(image_dirs):
        masks = {p.stem: p for p in (annotations / name).glob("*.png")}
        stems = {p.stem: p for p in image_dirs[name].iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES}
        frames = sorted(p for stem, p in stems.items() if stem in masks)
        if not frames:
            unannotated.append(name)
            continue
        orphan_masks += [f"{name}/{m}.png" for m in sorted(set(masks) - set(stems))]
        found.append(VideoSequence(name, tuple(frames), tuple(masks[p.stem] for p in frames)))
    no_frames = sorted(mask_dirs - set(image_dirs))
    fix = ("; re-extract the dataset, or move the incomplete sequences out of the root")
    if unannotated:
        raise UserError(f"{root}: {len(unannotated)} sequence(s) in {images.name}/ have no "
                        f"annotated frame in {annotations.name}/ ({_some(unannotated)}){fix}")
    if no_frames:
        raise UserError(f"{root}: {len(no_frames)} annotation folder(s) have no frames in "
                        f"JPEGImages/ ({_some(no_frames)}){fix}")
    if orphan_masks:
        raise UserError(f"{root}: {len(orphan_masks)} annotation(s) have no frame of the same "
                        f"name ({_some(orphan_masks)}){fix}")
    if not found:
        raise UserError(f"{root}: no sequence has frames with matching annotations")
    return found


def find_images(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a static image set."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise UserError(f"{root}: a static image set needs images/ and masks/ folders with "
                        "matching file names")
    masks = {p.stem: p for p in (root / "masks").glob("*.png")}
    pairs = [(p, masks[p.stem]) for p in sorted((root / "images").iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks]
    if not pairs:
        raise UserError(f"{root}: no image in images/ has a mask of the same name in masks/")
    return pairs


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: unreadable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


class VideoClips:
    """Random T-frame clips: increasing frame indices spread over at most
    (T-1) * ``max_skip`` + 1 frames, one random crop (``min_crop``-1 of the frame's height)
    and flip for the whole clip, one target object present in frame 0.

    ``repeats`` (one per root, default 1) mixes datasets as STCN's main stage does by
    repeating DAVIS 5 times beside YouTube-VOS: a sequence of root r is drawn with weight
    ``repeats[r]``, so root r supplies repeats[r] * len(r) / sum(repeats * len) of the clips.
    """

    def __init__(self, roots: list[Path], size: tuple[int, int], frames: int = 5,
                 max_skip: int = 3, min_crop: float = 0.5,
                 repeats: list[int] | None = None, objects: int = 1) -> None:
        repeats = list(repeats) if repeats else [1] * len(roots)
        if len(repeats) != len(roots) or any(r < 1 for r in repeats):
            raise UserError(f"give one positive repeat per data root ({len(roots)} root(s)), "
                            f"not {repeats}")
        weighted = [(s, r) for root, r in zip(roots, repeats, strict=True)
                    for s in find_sequences(root) if len(s.frames) >= frames]
        if not weighted:
            raise UserError(f"no sequence has {frames} annotated frames; lower --frames or "
                            "add data")
        self.sequences = [s for s, _ in weighted]
        self.weights = torch.tensor([float(r) for _, r in weighted])
        self.size, self.frames, self.max_skip = size, frames, max_skip
        self.min_crop = min_crop
        self.objects = objects

    def _indices(self, total: int, gen: torch.Generator) -> list[int]:
        span = min(total - 1, (self.frames - 1) * self.max_skip)
        start = int(torch.randint(0, total - span, (1,), generator=gen))
        picks = sorted(torch.randperm(span, generator=gen)[: self.frames - 1].add(1).tolist())
        return [start] + [start + p for p in picks]

    def sample(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(20):
            seq = self.sequences[int(torch.multinomial(self.weights, 1, generator=gen))]
            idx = self._indices(len(seq.frames), gen)
            ids = [read_mask(seq.masks[i]) for i in idx]
            objects = [k for k in np.unique(ids[0]) if k not in (0, 255)]
            if not objects:
                continue
            target = objects[int(torch.randint(len(objects), (1,), generator=gen))]
            rgb = [_rgb(seq.frames[i]) for i in idx]
            if self.objects == 1:
                masks = [(m == target).astype(np.float32) for m in ids]
                frames, masks_t = _crop_clip(rgb, masks, self.size, gen, self.min_crop)
                if masks_t[0].sum() >= MIN_OBJECT_PIXELS:
                    return frames, masks_t
                continue
            rest = [k for k in objects if k != target]
            order = torch.randperm(len(rest), generator=gen).tolist()
            chosen = [target, *(rest[i] for i in order)][: self.objects]
            masks = [np.stack([(m == k) for k in chosen]
                              + [np.zeros_like(m, bool)] * (self.objects - len(chosen)),
                              axis=-1).astype(np.float32) for m in ids]
            frames, masks_t = _crop_clip(rgb, masks, self.size, gen, self.min_crop)
            masks_t = masks_t.permute(0, 3, 1, 2).contiguous()  # T x K x H x W
            if masks_t[0, 0].sum() >= MIN_OBJECT_PIXELS:
                small = masks_t[0].flatten(1).sum(1) < MIN_OBJECT_PIXELS
                masks_t[:, small] = 0.0
                return frames, masks_t
        raise UserError("20 random clips in a row had no visible target object in frame 0; "
                        "check the annotations (0 background, 1..K objects, 255 void)")


def _crop_clip(rgb: list[np.ndarray], masks: list[np.ndarray], size: tuple[int, int],
               gen: torch.Generator, min_crop: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop (scale ``min_crop``-1, the output's aspect) and flip, resized to
    ``size``."""
    src_h, src_w = rgb[0].shape[:2]
    out_h, out_w = size
    scale = min_crop + (1.0 - min_crop) * float(torch.rand(1, generator=gen))
    crop_h = min(src_h, int(src_h * scale))
    crop_w = min(src_w, int(crop_h * out_w / out_h))
    crop_h = min(crop_h, int(crop_w * out_h / out_w)) or 1
    y = int(torch.randint(0, src_h - crop_h + 1, (1,), generator=gen))
    x = int(torch.randint(0, src_w - crop_w + 1, (1,), generator=gen))
    flip = bool(torch.rand(1, generator=gen) < 0.5)
    frames, out_masks = [], []
    for image, mask in zip(rgb, masks, strict=True):
        image = cv2.resize(image[y:y + crop_h, x:x + crop_w], (out_w, out_h),
                           interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask[y:y + crop_h, x:x + crop_w], (out_w, out_h),
                          interpolation=cv2.INTER_NEAREST)
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        frames.append(_to_tensor(np.ascontiguousarray(image)))
        out_masks.append(torch.from_numpy(np.ascontiguousarray(mask)))
    return torch.stack(frames), torch.stack(out_masks)


class StaticClips:
    """T-frame clips made from one still image: each frame is the image under its own
    random affine (rotation, scale, shear, shift) and elastic warp."""

    def __init__(self, roots: list[Path], size: tuple[int, int], frames: int = 5,
                 rotate: float = 20.0, elastic: float = 0.06, objects: int = 1) -> None:
        self.pairs = [p for root in roots for p in find_images(root)]
        self.size, self.frames = size, frames
        self.rotate, self.elastic = rotate, elastic
        self.objects = objects  # one object per image; K > 1 pads empty slots

    def sample(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(20):
            image_path, mask_path = self.pairs[int(torch.randint(len(self.pairs), (1,),
                                                                 generator=gen))]
            image = cv2.resize(_rgb(image_path), self.size[::-1], interpolation=cv2.INTER_AREA)
            mask = (read_mask(mask_path) > 0).astype(np.float32)
            mask = cv2.resize(mask, self.size[::-1], interpolation=cv2.INTER_NEAREST)
            base = torch.cat([_to_tensor(image), torch.from_numpy(mask)[None]])[None]
            warped = torch.cat([deform(base, gen, self.rotate, self.elastic)
                                for _ in range(self.frames)])
            masks = (warped[:, 3] > 0.5).float()
            if masks[0].sum() >= MIN_OBJECT_PIXELS:
                if self.objects > 1:
                    masks = torch.cat([masks[:, None], masks.new_zeros(
                        self.frames, self.objects - 1, *masks.shape[1:])], dim=1)
                return warped[:, :3].clamp(0, 1), masks
        raise UserError("20 random still images in a row had (almost) empty masks; check "
                        "masks/ (non-zero pixels are the object)")


def deform(image: torch.Tensor, gen: torch.Generator, rotate: float = 20.0,
           elastic: float = 0.06) -> torch.Tensor:
    """1 x C x H x W → the same under a random affine and a smooth random displacement
    field (a 4x4 grid of offsets up to ``elastic`` of the frame, upsampled bicubically)."""
    _, _, h, w = image.shape

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))

    angle = math.radians(uniform(-rotate, rotate))
    scale = uniform(0.9, 1.1)
    shear = uniform(-0.1, 0.1)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin + shear, uniform(-0.1, 0.1)],
                          [sin, cos, uniform(-0.1, 0.1)]])[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    coarse = (torch.rand(1, 2, 4, 4, generator=gen) * 2 - 1) * 2 * elastic
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def derived_seeds(entropy: list[int], count: int) -> list[int]:
    """``count`` torch seeds that are a function of ``entropy`` only (numpy's SeedSequence
    mixes the numbers)."""
    state = np.random.SeedSequence(entropy).generate_state(count, dtype=np.uint64)
    return [int(x) >> 1 for x in state]  # torch seeds are < 2**64; keep them positive


def clip_keys(seed: int, iteration: int, count: int) -> list[int]:
    """The ``count`` clip seeds of iteration ``iteration`` (0-based) of a run seeded ``seed``."""
    return derived_seeds([seed, iteration], count)


def sample_clip(source, key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip of ``source`` (VideoClips / StaticClips) that seed ``key`` draws."""
    return source.sample(torch.Generator().manual_seed(key))


class ClipSet(torch.utils.data.Dataset):
    """Map-style view for torch's DataLoader: item (stage, key) → one clip, where stage
    indexes ``sources`` (still images, videos); keys come from :func:`clip_keys`."""

    def __init__(self, sources: list) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return 2**31 - 1  # keyed by seed: the batch sampler names the items

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        stage, key = item
        return sample_clip(self.sources[stage], key)


def collate(clips: list[tuple[torch.Tensor, torch.Tensor]]) -> ClipBatch:
    return ClipBatch(torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips]))
