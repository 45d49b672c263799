"""Frames and masks on disk: frame folders, video files, DAVIS indexed PNG masks, overlays.

Conventions (DAVIS): frames ``00000.jpg``..., masks indexed ("P" mode) PNGs with the
DAVIS palette, 0 background, 1..K objects, 255 void. Frames are H x W x 3 uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import UserError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def davis_palette() -> np.ndarray:
    """256 x 3 uint8: the PASCAL VOC / DAVIS colour map (bit-interleaved label colours)."""
    palette = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


@dataclass(frozen=True)
class FrameSource:
    """Frames of one clip, read lazily in order."""

    path: Path
    names: list[str]  # output stem of each frame, e.g. "00000"
    height: int
    width: int
    fps: float

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.path.is_dir():
            for file in _frame_files(self.path):
                yield _read_image(file)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            for _ in self.names:
                ok, bgr = capture.read()
                if not ok:
                    raise UserError(f"{self.path}: video ended early; re-encode it or "
                                    "extract its frames to a folder")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    stems = [p.stem for p in files]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:  # one output mask per name: one of them would overwrite the other
        clash = ", ".join(p.name for p in files if p.stem == twins[0])
        raise UserError(f"{folder}: frames {clash} share a name; keep one image per frame "
                        "name in the folder")
    return files


def _read_image(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{file}: not a readable image ({err})") from None


def open_frames(path: Path) -> FrameSource:
    """A folder of JPEG/PNG frames (sorted by name) or a video file OpenCV can read."""
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise UserError(f"{path}: no {'/'.join(FRAME_SUFFIXES)} frames in this folder")
        first = _read_image(files[0])
        return FrameSource(path, [f.stem for f in files], *first.shape[:2], 0.0)
    if not path.is_file():
        raise UserError(f"{path}: no such folder or video file")
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, bgr = capture.read()
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    finally:
        capture.release()
    if not ok or count <= 0:
        raise UserError(f"{path}: OpenCV cannot read this video; convert it (e.g. "
                        "ffmpeg -i IN -c:v libx264 OUT.mp4) or give a folder of frames")
    return FrameSource(path, [f"{i:05d}" for i in range(count)], *bgr.shape[:2], fps)


def read_mask(file: Path) -> np.ndarray:
    """H x W uint8 ids from an indexed PNG (DAVIS convention); greyscale PNGs read as is."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file}: mask not found")
    try:
        with Image.open(file) as image:
            if image.mode not in ("P", "L", "1"):
                raise UserError(f"{file}: mask must be an indexed (palette) PNG with ids "
                                f"0 background, 1..K objects, 255 void; got mode {image.mode}")
            return np.asarray(image.convert("L") if image.mode == "1" else image, np.uint8)
    except (OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{file}: not a readable PNG ({err})") from None


def write_mask(file: Path, ids: np.ndarray) -> None:
    """Indexed PNG with the DAVIS palette."""
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().tobytes())
    image.save(file)


def blend(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB frame with each object's palette colour laid over it and its outline drawn."""
    colours = davis_palette()[ids]
    out = frame.astype(np.float32)
    on = (ids > 0) & (ids != 255)
    out[on] = (1 - alpha) * out[on] + alpha * colours[on]
    edges = cv2.morphologyEx(ids, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges & on] = colours[edges & on]
    return out.astype(np.uint8)


def contact_sheet(frames: list[np.ndarray], columns: int = 4, width: int = 320) -> np.ndarray:
    """Frames scaled to ``width`` and tiled in rows of ``columns``."""
    scaled = [cv2.resize(f, (width, round(f.shape[0] * width / f.shape[1])),
                         interpolation=cv2.INTER_AREA) for f in frames]
    h = scaled[0].shape[0]
    rows = []
    for start in range(0, len(scaled), columns):
        row = scaled[start : start + columns]
        row += [np.zeros_like(scaled[0])] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)[: h * len(rows)]
