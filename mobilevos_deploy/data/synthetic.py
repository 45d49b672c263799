"""Generated clips: textured objects moving over a textured background, with their masks.

Tests and the demo use these (nothing is downloaded). ``moving_object_clip``: an ellipse
that drifts, grows and shrinks, and a second, differently textured ellipse passing over it
as an occluder. ``shapes_clip``: a random star-convex shape and occluder. ``scene_clip``:
several objects, a look-alike distractor and a moving camera (training data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Clip:
    frames: torch.Tensor  # T x 3 x H x W, RGB in [0, 1]
    masks: torch.Tensor  # T x H x W, 1.0 on the object (occluder removed)
    occluder: torch.Tensor  # T x H x W, 1.0 on the occluder
    labels: torch.Tensor | None = None  # T x H x W uint8 ids, when there are more objects

    def ids(self) -> torch.Tensor:
        """T x H x W uint8 DAVIS ids: 1 the object (where visible), 2 the occluder (or
        ``labels``: 1..K the objects, 0 background and unannotated distractors)."""
        if self.labels is not None:
            return self.labels
        return (self.masks > 0.5).to(torch.uint8) + 2 * (self.occluder > 0.5).to(torch.uint8)


def _texture(gen: torch.Generator, height: int, width: int, cells: int) -> torch.Tensor:
    low = torch.rand(1, 3, cells, cells, generator=gen)
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]


def _ellipse(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    return (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0).float()


def moving_object_clip(
    num_frames: int, height: int, width: int, seed: int = 0, occluder: bool = True,
    occluder_from: float = 1.1,
) -> Clip:
    """``occluder_from``: where the occluder's centre starts, as a fraction of the width
    (1.1: outside the first frame; below ~1.05 it is in view from frame 0)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    background = _texture(gen, height, width, 6) * 0.6
    obj_tex = 0.4 + 0.6 * _texture(gen, height, width, 3)
    occ_tex = _texture(gen, height, width, 12)
    start = rng.uniform([0.3, 0.25], [0.5, 0.4]) * (height, width)
    velocity = rng.uniform(0.15, 0.35, size=2) * (height, width) / max(num_frames, 1)
    frames, masks, occluders = [], [], []
    for t in range(num_frames):
        cy, cx = start + velocity * t
        scale = 1.0 + 0.2 * np.sin(t / 4.0)
        obj = _ellipse(height, width, cy, cx, 0.2 * height * scale, 0.15 * width * scale)
        if occluder:
            ox = width * (occluder_from - 1.2 * t / max(num_frames - 1, 1))
            occ = _ellipse(height, width, 0.55 * height, ox, 0.12 * height, 0.08 * width)
        else:
            occ = torch.zeros(height, width)
        visible = obj * (1.0 - occ)
        frame = background * (1 - obj) + obj_tex * obj
        frame = frame * (1 - occ) + occ_tex * occ
        frames.append(frame.clamp(0.0, 1.0))
        masks.append(visible)
        occluders.append(occ)
    return Clip(torch.stack(frames), torch.stack(masks), torch.stack(occluders))


def write_davis_clip(clip: Clip, root: Path, name: str) -> tuple[Path, Path]:
    """Writes ``root/JPEGImages/480p/<name>/00000.jpg...`` and the matching
    ``root/Annotations/480p/<name>/00000.png...`` (indexed, DAVIS palette); returns both."""
    from PIL import Image

    from .media import write_mask

    frames_dir = root / "JPEGImages" / "480p" / name
    masks_dir = root / "Annotations" / "480p" / name
    frames_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    ids = clip.ids().numpy()
    pixels = (clip.frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for t in range(len(pixels)):
        Image.fromarray(pixels[t]).save(frames_dir / f"{t:05d}.jpg", quality=95)
        write_mask(masks_dir / f"{t:05d}.png", ids[t])
    return frames_dir, masks_dir


def _blob(height: int, width: int, cy: float, cx: float, radius: float, angle: float,
          harmonics: np.ndarray) -> torch.Tensor:
    """A star-convex shape: r(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k)).
    harmonics: K x 3 rows (k, a_k, phi_k)."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] - cy
    xs = torch.arange(width, dtype=torch.float32)[None, :] - cx
    theta = torch.atan2(ys, xs) - angle
    edge = torch.ones_like(theta)
    for k, a, phi in harmonics:
        edge = edge + float(a) * torch.cos(float(k) * theta + float(phi))
    return (torch.sqrt(ys**2 + xs**2) <= radius * edge).float()


def shapes_clip(num_frames: int, height: int, width: int, seed: int = 0) -> Clip:
    """A harder, more varied clip for training experiments: a textured star-convex shape
    (random lobes) that drifts, turns and breathes over a textured background, with a
    second textured shape passing over it (the occluder, in view from the start or not)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = min(height, width)

    def shape_params() -> np.ndarray:
        lobes = rng.integers(0, 4)
        return np.array([[rng.integers(2, 6), rng.uniform(0.05, 0.3), rng.uniform(0, 6.3)]
                         for _ in range(lobes)]).reshape(-1, 3)

    background = _texture(gen, height, width, int(rng.integers(4, 12))) * rng.uniform(0.4, 0.9)
    obj_tex = (_texture(gen, height, width, int(rng.integers(2, 8)))
               * torch.from_numpy(rng.uniform(0.3, 1.0, 3)).float()[:, None, None]
               + rng.uniform(0.0, 0.4))
    occ_tex = _texture(gen, height, width, int(rng.integers(6, 16)))
    obj_shape, occ_shape = shape_params(), shape_params()
    start = rng.uniform([0.3, 0.3], [0.7, 0.7]) * (height, width)
    velocity = rng.uniform(-0.3, 0.3, size=2) * (height, width) / max(num_frames, 1)
    radius, spin = rng.uniform(0.12, 0.25) * size, rng.uniform(-0.1, 0.1)
    occ_y, occ_from = rng.uniform(0.3, 0.7) * height, rng.uniform(0.8, 1.3)
    occ_dir = 1.0 if rng.random() < 0.5 else -1.0
    occ_radius = rng.uniform(0.08, 0.16) * size
    frames, masks, occluders = [], [], []
    for t in range(num_frames):
        cy, cx = start + velocity * t
        scale = 1.0 + 0.15 * np.sin(t / 3.0 + seed)
        obj = _blob(height, width, cy, cx, radius * scale, spin * t, obj_shape)
        progress = occ_from - 1.4 * t / max(num_frames - 1, 1)
        ox = width * (progress if occ_dir > 0 else 1.0 - progress)
        occ = _blob(height, width, occ_y, ox, occ_radius, -spin * t, occ_shape)
        frame = background * (1 - obj) + obj_tex * obj
        frame = frame * (1 - occ) + occ_tex * occ
        frames.append(frame.clamp(0.0, 1.0))
        masks.append(obj * (1.0 - occ))
        occluders.append(occ)
    return Clip(torch.stack(frames), torch.stack(masks), torch.stack(occluders))


def _window(canvas: torch.Tensor, top: float, left: float, height: int,
            width: int) -> torch.Tensor:
    """The height x width window of a C x H' x W' canvas at (top, left), clamped inside."""
    y = int(np.clip(round(top), 0, canvas.shape[1] - height))
    x = int(np.clip(round(left), 0, canvas.shape[2] - width))
    return canvas[:, y : y + height, x : x + width]


def scene_clip(num_frames: int, height: int, width: int, seed: int = 0) -> Clip:
    """Several objects, the clips to train on: 2 or 3 annotated textured shapes (ids 1..K)
    and one unannotated distractor textured like object 1, each with its own depth (they
    occlude one another), drift, turn, breathing and growth or shrinking, over a two-octave
    textured background seen by a panning, zooming camera. Textures move with their
    shapes, so an object keeps its look."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = min(height, width)
    count = int(rng.integers(2, 4))  # annotated objects; one distractor more
    canvas = (_texture(gen, 2 * height, 2 * width, int(rng.integers(4, 10)))
              * rng.uniform(0.3, 0.8) + 0.35 * _texture(gen, 2 * height, 2 * width, 24))
    pan = rng.uniform(-0.25, 0.25, 2) * (height, width) / max(num_frames - 1, 1)
    zoom = rng.uniform(-0.15, 0.15)  # relative change of the field of view over the clip
    objects = []
    for k in range(count + 1):
        tex = (_texture(gen, 2 * height, 2 * width, int(rng.integers(2, 8)))
               * torch.from_numpy(rng.uniform(0.3, 1.0, 3)).float()[:, None, None]
               + rng.uniform(0.0, 0.4))
        if k == count:  # the distractor: object 1's look, a little changed
            tex = objects[0]["tex"] * rng.uniform(0.85, 1.15) + 0.05 * tex
        lobes = int(rng.integers(0, 4))
        objects.append({
            "id": 0 if k == count else k + 1, "tex": tex.clamp(0.0, 1.0),
            "shape": np.array([[rng.integers(2, 6), rng.uniform(0.05, 0.3),
                                rng.uniform(0, 6.3)] for _ in range(lobes)]).reshape(-1, 3),
            "start": rng.uniform([0.2, 0.2], [0.8, 0.8]) * (height, width),
            "velocity": rng.uniform(-0.4, 0.4, 2) * (height, width) / max(num_frames, 1),
            "radius": rng.uniform(0.08, 0.2) * size, "spin": rng.uniform(-0.12, 0.12),
            "growth": rng.uniform(0.7, 1.4), "phase": rng.uniform(0, 6.3),
            "depth": rng.random()})
    frames, labels = [], []
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        view = 1.0 + zoom * progress  # field of view; objects scale by 1 / view
        top, left = 0.5 * height + pan[0] * t, 0.5 * width + pan[1] * t
        frame = _window(canvas, top, left, height, width)
        ids = torch.zeros(height, width, dtype=torch.uint8)
        for obj in sorted(objects, key=lambda o: o["depth"]):  # far to near
            cy, cx = obj["start"] + obj["velocity"] * t - pan * t
            cy = height / 2 + (cy - height / 2) / view
            cx = width / 2 + (cx - width / 2) / view
            scale = (obj["growth"] ** progress) * (1 + 0.1 * np.sin(t / 3 + obj["phase"]))
            shape = _blob(height, width, cy, cx, obj["radius"] * scale / view,
                          obj["spin"] * t, obj["shape"])
            look = _window(obj["tex"], height - cy, width - cx, height, width)
            frame = frame * (1 - shape) + look * shape
            ids = torch.where(shape > 0.5, torch.tensor(obj["id"], dtype=torch.uint8), ids)
        frames.append(frame.clamp(0.0, 1.0))
        labels.append(ids)
    label_map = torch.stack(labels)
    return Clip(torch.stack(frames), (label_map == 1).float(), (label_map == 2).float(),
                label_map)


KINDS = ("ellipse", "shapes", "scene")


def write_synth_set(out: Path, name: str, kind: str, clips: int, num_frames: int,
                    height: int, width: int, seed: int = 0, replace: bool = False) -> list[str]:
    """``clips`` generated sequences (clip i from seed ``seed + i``) into the DAVIS-layout
    root ``out``; returns their names. A sequence already in ``out`` is refused, or with
    ``replace`` replaced whole, never overwritten frame by frame (frames of two sizes would
    mix); the clips are written in a staging folder inside ``out`` and moved into place
    only when all are written."""
    import shutil

    from ..errors import UserError
    from ..files import check_writable, make_temp_dir

    generate = {"ellipse": lambda n, h, w, s: moving_object_clip(n, h, w, seed=s,
                                                                 occluder_from=0.85),
                "shapes": lambda n, h, w, s: shapes_clip(n, h, w, seed=s),
                "scene": lambda n, h, w, s: scene_clip(n, h, w, seed=s)}[kind]
    out = Path(out)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):  # a folder name, never a path
        raise UserError(f"--name {name!r}: a sequence name is letters, digits, '.', '_' and "
                        "'-', starting with a letter or digit")
    check_writable(out, "--out", folder=True)
    names = [name] if clips == 1 else [f"{name}_{i:03d}" for i in range(clips)]
    parts = (Path("JPEGImages") / "480p", Path("Annotations") / "480p")
    taken = [str(part / n) for n in names for part in parts
             if (out / part / n).exists() or (out / part / n).is_symlink()]
    odd = [t for t in taken if (out / t).is_symlink() or not (out / t).is_dir()]
    if odd:
        raise UserError(f"{out / odd[0]} is not a sequence folder (a file or a link); "
                        "refusing to replace it. Choose another --out or --name.")
    if taken and not replace:
        raise UserError(f"{out} already holds {taken[0]}"
                        f"{f' and {len(taken) - 1} more' if len(taken) > 1 else ''}; "
                        "refusing to overwrite it. Choose another --out or --name, or pass "
                        "--replace to replace those sequences whole.")
    out.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(".mvos-synth-", out)
    try:
        for i, seq in enumerate(names):
            write_davis_clip(generate(num_frames, height, width, seed + i), staging, seq)
        for part in parts:
            (out / part).mkdir(parents=True, exist_ok=True)
            for seq in names:
                if replace and (out / part / seq).is_dir():
                    shutil.rmtree(out / part / seq)
                (staging / part / seq).replace(out / part / seq)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names
