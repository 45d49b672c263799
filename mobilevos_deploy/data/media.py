"""Frames and masks on disk: frame folders, video files, DAVIS indexed PNG masks, overlays.

Conventions (DAVIS): frames ``00000.jpg``..., masks indexed ("P" mode) PNGs with the
DAVIS palette, 0 background, 1..K objects, 255 void. Frames are H x W x 3 uint8 RGB.

One reader for frames and one for masks, each for every mode PIL opens, and each turned as
an image viewer shows it (EXIF orientation). A frame folder is read in the order of the
numbers in the file names (``2.jpg`` before ``10.jpg``); hidden files (``.*``, such as
macOS's ``._*`` twins) are not frames. A mask must come in a lossless format: JPEG's
compression noise would turn into object ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

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


def frame_order(name: str) -> list:
    """Sort key of a frame file name: its runs of digits as numbers (``2.jpg`` before
    ``10.jpg``), the rest as text."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir()
                    if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: frame_order(p.name))
    stems = [p.stem for p in files]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:  # one output mask per name: one of them would overwrite the other
        clash = ", ".join(p.name for p in files if p.stem == twins[0])
        raise UserError(f"{folder}: frames {clash} share a name; keep one image per frame "
                        "name in the folder")
    return files


def _rgb8(image: Image.Image, file: Path) -> np.ndarray:
    """H x W x 3 uint8 of any mode PIL opens; 16- and 32-bit greyscale scaled from their
    full range (a 16-bit PNG read as 8-bit would clip to white)."""
    if image.mode.startswith("I"):  # I;16, I;16B, I (32-bit): greyscale of 16 bits
        grey = np.asarray(image).astype(np.float64)
        scale = 255.0 / 65535.0 if image.mode != "I" or grey.max() > 255 else 1.0
        grey = np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        raise UserError(f"{file}: a floating-point image; save the frames as 8-bit JPEG or "
                        "PNG")
    return np.asarray(image.convert("RGB"))


def _read_image(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return _rgb8(ImageOps.exif_transpose(image), file)
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


# formats whose compression changes pixel values: a mask's ids would become noise
LOSSY = ("JPEG", "MPO")


def read_mask(file: Path) -> np.ndarray:
    """H x W uint8 ids: an indexed PNG in the DAVIS convention (0 background, 1..K objects,
    255 void), or a greyscale or 1-bit one. A mask of only 0 and 255 in greyscale or 1 bit
    is a binary mask (255 or 1: object 1), not an all-void one."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file}: mask not found")
    try:
        with Image.open(file) as image:
            if image.format in LOSSY:
                raise UserError(f"{file}: a {image.format} mask; its compression noise would "
                                "become object ids. Save masks losslessly, as indexed PNG "
                                "(0 background, 1..K objects, 255 void)")
            image = ImageOps.exif_transpose(image)
            if image.mode == "1":
                return np.asarray(image).astype(np.uint8)  # True: object 1
            if image.mode.startswith("I"):
                wide = np.asarray(image)
                if wide.min() < 0 or wide.max() > 255:
                    raise UserError(f"{file}: mask values {wide.min()}..{wide.max()} are not "
                                    "ids 0..255; save an 8-bit indexed PNG")
                ids = wide.astype(np.uint8)
            elif image.mode in ("P", "L"):
                ids = np.asarray(image, np.uint8)
            else:
                raise UserError(f"{file}: mask must be an indexed (palette) PNG with ids "
                                f"0 background, 1..K objects, 255 void; got mode {image.mode}")
            if image.mode != "P" and set(np.unique(ids).tolist()) == {0, 255}:
                return (ids == 255).astype(np.uint8)  # a binary mask saved as 0/255
            return ids
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
