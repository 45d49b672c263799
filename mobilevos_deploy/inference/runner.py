"""run_video: a clip on disk → DAVIS-style indexed PNG masks (+ an optional overlay).

The output folder is written whole or not at all: masks go to a staging folder beside
it, which replaces ``out`` only when every frame is done. An existing ``out`` is replaced
only when an earlier run wrote it (it holds ``run.json``).
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.media import blend, contact_sheet, open_frames, read_mask, write_mask
from ..errors import UserError
from ..files import atomic_path, check_writable, make_temp_dir, real_out, replace_dir, sha256
from .backends import Backend
from .segment import object_ids, segment

RECORD = "run.json"
SHEET_FRAMES = 8
VIDEO_OUT = (".mp4", ".avi")
SHEET_OUT = (".png", ".jpg")


@dataclass(frozen=True)
class RunResult:
    out: Path
    frames: int
    objects: list[int]
    step_ms: list[float]
    overlay: Path | None

    def latency(self) -> dict[str, float]:
        ms = sorted(self.step_ms)
        if not ms:
            return {}
        return {"median": statistics.median(ms), "mean": statistics.fmean(ms),
                "p90": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "min": ms[0], "max": ms[-1]}


def _check_out(out: Path) -> None:
    """Only an empty folder or an earlier run's (its record and mask PNGs, nothing else) may
    be replaced; the location must be writable, checked before any frame is segmented."""
    check_writable(out, "--out", folder=True)
    if not out.exists():
        return
    entries = list(out.iterdir())
    if not entries:
        return
    foreign = sorted(p.name for p in entries
                     if not (p.is_file() and (p.name == RECORD or p.suffix == ".png")))
    if not (out / RECORD).is_file() or foreign:
        why = f"no {RECORD}" if not (out / RECORD).is_file() else f"it also holds {foreign[0]}"
        raise UserError(f"{out} exists and was not written by mvos-run ({why}); "
                        "choose another --out or remove it")


def _check_overlay(overlay: Path, out: Path) -> None:
    """An existing --overlay is replaced only when the earlier run in ``out`` wrote it (its
    record names the file and its sha256): anything else may be a user's image."""
    if not overlay.exists():
        return
    try:
        earlier = json.loads((out / RECORD).read_text()).get("overlay") or {}
    except (OSError, ValueError, AttributeError):
        earlier = {}
    if not (earlier.get("path") == str(overlay.resolve()) and overlay.is_file()
            and earlier.get("sha256") == sha256(overlay)):
        raise UserError(f"--overlay {overlay} exists and is not the overlay of the earlier "
                        f"run in {out}; refusing to overwrite it. Choose another path, or "
                        "remove it")


class _Overlay:
    """Blended frames: all of them into a video, or a few into a contact sheet image."""

    def __init__(self, path: Path, total: int, fps: float) -> None:
        self.path = path
        self.video = path.suffix.lower() in VIDEO_OUT
        self.fps = fps or 12.0
        self.picks = set(np.linspace(0, total - 1, min(SHEET_FRAMES, total)).round().astype(int))
        self.frames: list[np.ndarray] = []
        self.writer: cv2.VideoWriter | None = None
        # OpenCV picks the container from the suffix, so the staging file keeps it
        self.staging = path.with_name(f".{path.stem}.partial{path.suffix}")

    def add(self, t: int, rgb: np.ndarray, ids: np.ndarray) -> None:
        if not self.video:
            if t in self.picks:
                self.frames.append(blend(rgb, ids))
            return
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.staging), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (rgb.shape[1], rgb.shape[0]))
            if not self.writer.isOpened():
                raise UserError(f"{self.path}: OpenCV cannot write this video; use .mp4, "
                                "or a .png contact sheet")
        self.writer.write(cv2.cvtColor(blend(rgb, ids), cv2.COLOR_RGB2BGR))

    def finish(self) -> None:
        if self.video:
            self.writer.release()
            self.staging.replace(self.path)
            return
        ok, data = cv2.imencode(self.path.suffix,
                                cv2.cvtColor(contact_sheet(self.frames), cv2.COLOR_RGB2BGR))
        if not ok:
            raise UserError(f"{self.path}: cannot encode the contact sheet")
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(data.tobytes())

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.staging.unlink(missing_ok=True)


def run_video(backend: Backend, frames_path: Path, mask_path: Path, out: Path,
              overlay: Path | None = None, progress=None) -> RunResult:
    """Segment ``frames_path`` from the first-frame mask into ``out``; see the module doc."""
    out = real_out(out)  # through a symlink: the folder it points to is replaced
    source = open_frames(frames_path)
    first = read_mask(mask_path)
    if first.shape != (source.height, source.width):
        turned = first.shape == (source.width, source.height)
        raise UserError(f"{mask_path} is {first.shape[0]}x{first.shape[1]} but the frames in "
                        f"{frames_path} are {source.height}x{source.width}; give the mask of "
                        "the first frame at the frames' size" + (
                            " (frames and masks are read turned by their EXIF orientation, "
                            "as image viewers show them: draw the mask on the frame as "
                            "shown)" if turned else ""))
    if not object_ids(first):
        raise UserError(f"{mask_path}: the first mask holds no object ids (only 0 background "
                        "and 255 void); mark each object with its id 1..K")
    _check_out(out)
    if overlay is not None and overlay.suffix.lower() not in VIDEO_OUT + SHEET_OUT:
        raise UserError(f"{overlay}: the overlay is a video (.mp4, .avi) or a contact sheet "
                        "(.png, .jpg)")
    if overlay is not None:
        check_writable(overlay, "--overlay")
        _check_overlay(overlay, out)
        where = overlay.resolve()
        inputs = (Path(mask_path).resolve(), Path(frames_path).resolve(), out.resolve())
        if where == inputs[0] or where == inputs[1] or inputs[1] in where.parents \
                or inputs[2] == where or inputs[2] in where.parents:
            raise UserError(f"--overlay {overlay} is the mask, a frame or inside --out; write "
                            "it somewhere else")
    out.parent.mkdir(parents=True, exist_ok=True)
    if overlay is not None:
        overlay.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(f".{out.name}.", out.parent)
    sheet = _Overlay(overlay, len(source), source.fps) if overlay is not None else None

    def sink(t: int, rgb: np.ndarray, ids: np.ndarray) -> None:
        write_mask(staging / f"{source.names[t]}.png", ids)
        if sheet is not None:
            sheet.add(t, rgb, ids)
        if progress is not None:
            progress(1)

    try:
        result = segment(backend, source, first, sink)
        record = {"frames": str(Path(frames_path).resolve()),
                  "mask": str(Path(mask_path).resolve()), "backend": backend.name,
                  "device": backend.device,
                  "precision": backend.precision, "queue": backend.queue,
                  "size": [backend.height, backend.width], "objects": result.objects,
                  "step_ms": [round(v, 3) for v in result.step_ms]}
        if sheet is not None:
            sheet.finish()
            record["overlay"] = {"path": str(overlay.resolve()), "sha256": sha256(overlay)}
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if sheet is not None:
            sheet.abandon()
        raise
    return RunResult(out, result.frames, result.objects, result.step_ms, overlay)
