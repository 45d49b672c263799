"""mvos-train's loop: a student (or the teacher) on T-frame clips, with checkpoints,
resume, a log of every loss term and validation J&F.

The student runs its deployed finite queue: frame 0 is encoded from the given mask, and
every later frame is read against the queue and pushed into it from the student's own
prediction (:func:`student_clip`, the same calls as :class:`~..stages.StepStage`).
BatchNorm is frozen by default (``batchnorm="frozen"``: statistics and affine parameters
stay as loaded, as when fine-tuning pretrained trunks). From random weights, frozen
BatchNorm is no normalisation at all; ``batchnorm="train"`` trains it (batch statistics,
running averages for inference, learned affine), which is what makes a student learn from
scratch here.

Under torchrun (:mod:`.distributed`) every rank runs this loop on its share of each
batch (``batch`` clips per rank, ``batch`` x ranks in all: the same clips a single process
with that global batch draws, see :func:`.data.clip_keys`), DistributedDataParallel
averages the gradients, and rank 0 alone writes checkpoints, the log and validates.

Files in ``out``:
  last.pt, ckpt_NNNNNN.pt, best.pt   weights (student checkpoints load in mvos-export)
  train_state.pt                     everything --resume needs
  log.jsonl                          one line per iteration, one per validation
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..errors import UserError
from ..files import atomic_path, check_writable
from ..model.checkpoint import load_checkpoint, non_finite, save_checkpoint
from ..model.config import get_variant
from ..model.memory import initial_state, push
from ..model.objects import memory_inputs_batched
from ..model.student import Student, build_student, centre_logits
from . import distributed
from .data import (
    MIN_OBJECT_PIXELS,
    ClipBatch,
    ClipSet,
    StaticClips,
    VideoClips,
    clip_keys,
    collate,
    derived_seeds,
)
from .losses import LossConfig, mobilevos_loss
from .pretrained import BackboneReport, load_backbone_weights
from .teacher import Teacher, TeacherConfig, build_teacher, load_teacher, save_teacher
from .validate import Score, check_val_root, validate

STATE = "train_state.pt"
LOG = "log.jsonl"
TEACHER = "teacher"


@dataclass(frozen=True)
class TrainSettings:
    model: str  # a student variant, or "teacher"
    out: Path
    iters: int
    data: tuple[Path, ...] = ()  # DAVIS / YouTube-VOS roots
    data_repeats: tuple[int, ...] = ()  # one per root (STCN: DAVIS x5 beside YouTube-VOS)
    static: tuple[Path, ...] = ()  # still-image sets (images/, masks/)
    static_iters: int = 0  # iterations on the static sets before the videos
    size: tuple[int, int] = (384, 384)
    frames: int = 5
    batch: int = 4
    queue: int = 2
    max_skip: int = 3
    min_crop: float = 0.5  # smallest random crop, as a fraction of the frame's height
    lr: float = 1e-5
    weight_decay: float = 1e-7
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: Path | None = None
    teacher_mem_every: int = 1
    init: Path | None = None  # start from these weights (fine-tuning)
    val: Path | None = None
    val_every: int = 0
    val_size: tuple[int, int] | None = None  # default: the training size
    save_every: int = 500
    seed: int = 0
    batchnorm: str = "frozen"  # or "train"
    schedule: str = "constant"  # or "cosine": lr decays to 0 at ``iters``
    backbone_weights: tuple[Path, ...] = ()  # torchvision ImageNet state_dicts
    device: str = "cpu"  # or "cuda" (this rank's LOCAL_RANK GPU)
    amp: bool | None = None  # mixed precision; None: on for cuda, off for cpu
    workers: int = 0  # DataLoader worker processes per rank (0: load in the loop)
    objects: int = 1  # objects per clip trained jointly (STCN's multi-object training)

    def as_json(self) -> dict:
        out = dataclasses.asdict(self)
        return json.loads(json.dumps(out, default=str))


@dataclass(frozen=True)
class TrainResult:
    out: Path
    last: Path
    best: Path | None
    iterations: int
    best_score: Score | None
    seconds: float
    rank: int = 0  # under torchrun: this process's rank (rank 0 wrote the files)
    backbones: list[str] = field(default_factory=list)  # what --backbone-weights did


def student_clip(student: Student, embedding: nn.Module | None, frames: torch.Tensor,
                 first_mask: torch.Tensor, queue: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """frames: B x T x 3 x H x W, first_mask: B x 1 x H x W → (embeddings, logits) of
    frames 1..T-1, each B x D x H/4 x W/4 and B x 1 x H x W."""
    enc = student.key_encoder(frames[:, 0])
    state = initial_state(enc.key, student.encode_value(first_mask, enc.f16), queue)
    embeddings, logits = [], []
    for t in range(1, frames.shape[1]):
        enc = student.key_encoder(frames[:, t])
        readout = student.readout(*state, enc.key)
        features = student.decoder.features(readout, enc.query, enc.f8, enc.f4)
        logit = student.decoder.head(features)
        embeddings.append(embedding(features) if embedding is not None else features)
        logits.append(logit)
        if queue > 1 and t < frames.shape[1] - 1:
            value = student.encode_value(torch.sigmoid(logit), enc.f16)
            state = push(state, enc.key, value, queue)
    return embeddings, logits


def student_clip_objects(student: Student, embedding: nn.Module | None, frames: torch.Tensor,
                         first: torch.Tensor, present: torch.Tensor, queue: int
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Up to K objects of each clip trained jointly, the STCN way (model.objects): each
    frame encoded once for all objects, each object's memory written from the aggregated
    probabilities of its clip's present objects, with the others' sum in the value
    encoder's second channel. frames: B x T x 3 x H x W; first: B x K x H x W; present:
    B x K bool → (embeddings, logits) of frames 1..T-1, each BK x ... (clip-major, then
    object)."""
    b, k = first.shape[:2]

    def per_object(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(k, dim=0)

    enc = student.key_encoder(frames[:, 0])
    masks = first[:, :, None] * present[:, :, None, None, None]  # B x K x 1 x H x W
    others = masks.sum(dim=1, keepdim=True) - masks
    value = student.encode_value(masks.flatten(0, 1), per_object(enc.f16), others.flatten(0, 1))
    state = initial_state(per_object(enc.key), value, queue)
    embeddings, logits = [], []
    for t in range(1, frames.shape[1]):
        enc = student.key_encoder(frames[:, t])
        key = per_object(enc.key)
        readout = student.readout(*state, key)
        features = student.decoder.features(readout, per_object(enc.query),
                                            per_object(enc.f8), per_object(enc.f4))
        logit = student.decoder.head(features)
        embeddings.append(embedding(features) if embedding is not None else features)
        logits.append(logit)
        if queue > 1 and t < frames.shape[1] - 1:
            probs = torch.sigmoid(logit).unflatten(0, (b, k))
            written, others = memory_inputs_batched(probs, present)
            value = student.encode_value(written.flatten(0, 1), per_object(enc.f16),
                                         others.flatten(0, 1))
            state = push(state, key, value, queue)
    return embeddings, logits


class ClipModel(nn.Module):
    """What DistributedDataParallel wraps: the trained network (and the student's extra
    embedding) over one clip, so every trained parameter is reached in one forward."""

    def __init__(self, network: nn.Module, embedding: nn.Module | None, queue: int) -> None:
        super().__init__()
        self.network = network
        self.embedding = embedding
        self.queue = queue

    def forward(self, frames: torch.Tensor, first_mask: torch.Tensor,
                present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: B x T x 3 x H x W, first_mask: B x 1 x H x W → embeddings
        (T-1)B x D x H/4 x W/4 and logits (T-1)B x 1 x H x W, frame-major. Several
        objects (``present`` B x K bool, first_mask B x K x H x W): (T-1)BK rows."""
        if isinstance(self.network, Teacher):
            outs = self.network.clip(frames, first_mask, present)
            return torch.cat([o.features for o in outs]), torch.cat([o.logits for o in outs])
        if present is not None:
            embeddings, logits = student_clip_objects(self.network, self.embedding, frames,
                                                      first_mask, present, self.queue)
        else:
            embeddings, logits = student_clip(self.network, self.embedding, frames,
                                              first_mask, self.queue)
        return torch.cat(embeddings), torch.cat(logits)


def loss_generator(seed: int, iteration: int, rank: int) -> torch.Generator:
    """The generator of the loss's random pixel draws of one rank at one iteration."""
    return torch.Generator().manual_seed(derived_seeds([seed, iteration, 1 + rank], 1)[0])


class BatchKeys:
    """Batch sampler of one rank: per iteration from ``start``, the (stage, clip seed)
    items of its share; stage 0 is the still images, 1 the videos."""

    def __init__(self, s: TrainSettings, start: int, rank: int, world: int) -> None:
        self.s, self.start, self.rank, self.world = s, start, rank, world

    def __len__(self) -> int:
        return max(0, self.s.iters - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s, b = self.s, self.s.batch
        for it in range(self.start, s.iters):
            stage = 0 if s.static and (not s.data or it < s.static_iters) else 1
            keys = clip_keys(s.seed, it, b * self.world)[self.rank * b:(self.rank + 1) * b]
            yield [(stage, k) for k in keys]


BATCHNORM_MODES = ("frozen", "train")
SCHEDULES = ("constant", "cosine")


def freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


KEY_GAIN = 1.0


def sharpen_keys(student: Student, seed: int) -> None:
    """The key projection of a student about to train from random weights, at full gain.

    The seeded student's keys are damped (orthogonal, gain 0.15) so that its untrained
    affinities stay well-conditioned for the export gates; that makes every query attend
    almost uniformly (the largest softmax weight is ~1.4x uniform on generated clips), the
    read-out carries no position of the mask, and training learns only a saliency map.
    At gain 1 the largest weight is ~0.7 and the keys get a gradient from the start.
    """
    proj = student.key_encoder.key_proj
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        nn.init.orthogonal_(proj.weight, gain=KEY_GAIN)


def learning_rate(s: TrainSettings, iteration: int) -> float:
    """The rate for iteration ``iteration`` (0-based) of ``s.iters``."""
    if s.schedule == "cosine":
        return 0.5 * s.lr * (1.0 + math.cos(math.pi * min(iteration / s.iters, 1.0)))
    return s.lr


class _Run:
    """The networks, optimiser and sampling state of one training run (one rank)."""

    def __init__(self, s: TrainSettings, ctx: distributed.Context | None = None) -> None:
        ctx = ctx or distributed.Context(0, 1, torch.device(s.device))
        self.s, self.ctx = s, ctx
        self.is_teacher = s.model == TEACHER
        self.variant = None if self.is_teacher else get_variant(s.model).name
        if s.batchnorm not in BATCHNORM_MODES or s.schedule not in SCHEDULES:
            raise UserError(f"batchnorm must be one of {BATCHNORM_MODES} and schedule one of "
                            f"{SCHEDULES}, not {s.batchnorm!r} / {s.schedule!r}")
        self.backbones: BackboneReport | None = None
        self.network, self.embedding, self.teacher = self._networks()
        self.model = ClipModel(self.network, self.embedding, s.queue).to(ctx.device)
        if self.teacher is not None:
            self.teacher.to(ctx.device)
        self.set_modes()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
        self.trainer: nn.Module = self.model
        if ctx.world > 1:  # after freezing: DDP syncs the parameters that train
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.trainer = DistributedDataParallel(self.model, device_ids=ids)
        self.amp = self._precision()
        self.scaler = torch.amp.GradScaler(ctx.device.type,
                                           enabled=self.amp == torch.float16)
        self.iteration = 0
        self.best: tuple[float, int] | None = None  # (J&F, iteration)
        if s.objects < 1:
            raise UserError(f"--objects must be >= 1, got {s.objects}")
        videos = (VideoClips(list(s.data), s.size, s.frames, s.max_skip, s.min_crop,
                             list(s.data_repeats) or None, s.objects)
                  if s.data and s.iters else None)
        stills = (StaticClips(list(s.static), s.size, s.frames, objects=s.objects)
                  if s.static and s.iters else None)
        self.clips = ClipSet([stills, videos])

    def _precision(self) -> torch.dtype | None:
        """Autocast dtype: bf16 where the device has it, fp16 (with loss scaling) on older
        GPUs; None for fp32. On by default on CUDA only."""
        use = self.s.amp if self.s.amp is not None else self.ctx.device.type == "cuda"
        if not use:
            return None
        if self.ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    def set_modes(self) -> None:
        """Training mode, BatchNorm frozen unless ``batchnorm="train"`` (again after each
        validation, which puts the network in eval mode and back)."""
        self.network.train()
        if self.s.batchnorm == "frozen":
            freeze_batchnorm(self.network)

    def _networks(self) -> tuple[nn.Module, nn.Module | None, Teacher | None]:
        s = self.s
        if self.is_teacher:  # trained with the memory it will distil with
            if s.backbone_weights:
                raise UserError("--backbone-weights initialises student trunks; the teacher "
                                "trains from random weights (or distil from the released STCN "
                                "with --teacher stcn.pth)")
            if s.init is not None:
                return load_teacher(s.init, s.teacher_mem_every), None, None
            return build_teacher(TeacherConfig(), s.seed, s.teacher_mem_every), None, None
        if s.init is not None:
            if s.backbone_weights:
                raise UserError("--init and --backbone-weights both set the weights; give one")
            loaded = load_checkpoint(s.init, self.variant)
            student = loaded.student
        elif s.backbone_weights:
            student = build_student(get_variant(self.variant).config, seed=s.seed, centre=False)
            sharpen_keys(student, s.seed)
            self.backbones = load_backbone_weights(student, list(s.backbone_weights), s.seed)
            centre_logits(student)  # the mask bias, for the trunks it now has
        else:
            student = build_student(get_variant(self.variant).config, seed=s.seed)
            sharpen_keys(student, s.seed)
        teacher = None
        if s.loss.needs_teacher and s.iters:
            if s.teacher is None:
                raise UserError("logit distillation and the representation loss with omega > 0 "
                                "need --teacher (train one with --model teacher, or give the "
                                "released STCN checkpoint), or use --loss ce / --omega 0")
            teacher = load_teacher(s.teacher, s.teacher_mem_every)
            if s.objects > 1 and not isinstance(teacher, Teacher):
                raise UserError(f"{s.teacher} is the released STCN teacher, which distils one "
                                "object per clip here; train with --objects 1, or distil from "
                                "a teacher of ours (mvos-train --model teacher --objects "
                                f"{s.objects})")
            for p in teacher.parameters():
                p.requires_grad_(False)
        embedding = None
        if s.loss.repr:
            width = student.config.decoder_dims[2]
            dim = teacher.feature_dim if teacher is not None else width
            with torch.random.fork_rng():
                torch.manual_seed(s.seed)
                embedding = nn.Conv2d(width, dim, 1)  # the extra linear embedding
        return student, embedding, teacher

    def batches(self) -> Iterator[ClipBatch]:
        """This rank's batches from the current iteration to the end."""
        keys = BatchKeys(self.s, self.iteration, self.ctx.rank, self.ctx.world)
        if self.s.workers == 0:
            for items in keys:
                yield collate([self.clips[item] for item in items])
            return
        yield from DataLoader(self.clips, batch_sampler=keys, num_workers=self.s.workers,
                              collate_fn=collate, pin_memory=self.ctx.device.type == "cuda")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp)

    def step(self, clips: ClipBatch | None = None) -> dict[str, float]:
        """One optimiser step on ``clips`` (default: this iteration's batch)."""
        s, dev = self.s, self.ctx.device
        if clips is None:
            clips = next(iter(self.batches()))
        frames = clips.frames.to(dev, non_blocking=True)
        masks = clips.masks.to(dev, non_blocking=True)
        present = select = None
        if masks.dim() == 5:  # B x T x K x H x W: objects trained jointly
            first = masks[:, 0]
            present = first.flatten(2).sum(-1) >= MIN_OBJECT_PIXELS  # B x K
            targets = masks[:, 1:].transpose(0, 1).flatten(0, 2)  # (T-1)BK x H x W
            select = present[None].expand(masks.shape[1] - 1, -1, -1).flatten()
            targets = targets[select]  # the loss sees present objects only
        else:
            first = masks[:, :1]
            targets = masks[:, 1:].transpose(0, 1).flatten(0, 1)  # (T-1)B x H x W
        teacher_logits = teacher_features = None
        with self.autocast():
            embeddings, logits = self.trainer(frames, first, present)
            if self.teacher is not None:
                with torch.no_grad():
                    outs = self.teacher.clip(frames, first, present)
                teacher_logits = torch.cat([o.logits for o in outs]).float()
                teacher_features = torch.cat([o.features for o in outs]).float()
        if select is not None:
            embeddings, logits = embeddings[select], logits[select]
            if teacher_logits is not None:
                teacher_logits, teacher_features = (teacher_logits[select],
                                                    teacher_features[select])
        loss_cfg = dataclasses.replace(s.loss, logit=False, repr=False) if self.is_teacher \
            else s.loss
        terms = mobilevos_loss(loss_cfg, targets, logits.float(), embeddings.float(),
                               teacher_logits, teacher_features,
                               loss_generator(s.seed, self.iteration, self.ctx.rank))
        values = self.ctx.mean(terms.as_dict())  # every rank sees a NaN of any rank
        if not all(math.isfinite(v) for v in values.values()):
            saved = sorted(s.out.glob("ckpt_*.pt"))
            raise UserError(f"iteration {self.iteration + 1}: the loss is not finite "
                            f"({values}): the run diverged. Lower --lr; the last "
                            f"good weights are {saved[-1] if saved else 'not saved yet'}")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(s, self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        return values

    def validate(self) -> Score:
        """Validation J&F of the network as it is now (rank 0; on the CPU)."""
        s = self.s
        network = self.network if self.ctx.device.type == "cpu" else \
            copy.deepcopy(self.network).cpu()
        score = validate(network, s.val, s.val_size or s.size, s.queue)
        self.set_modes()
        return score

    # -- files ---------------------------------------------------------------------------
    def save_weights(self, path: Path) -> Path:
        if self.is_teacher:
            return save_teacher(path, self.network)
        return save_checkpoint(path, self.network, self.variant)

    def save_state(self) -> None:
        payload = {
            "settings": self.s.as_json(), "iteration": self.iteration,
            "network": self.network.state_dict(),
            "embedding": None if self.embedding is None else self.embedding.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "best": list(self.best) if self.best else None,
        }
        with atomic_path(self.s.out / STATE) as tmp:
            torch.save(payload, tmp)

    def load_state(self) -> None:
        path = self.s.out / STATE
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one message
            raise UserError(f"{path}: cannot resume from it ({str(exc)[:200]}); start a "
                            "fresh run in another --out") from None
        fresh = "; start a fresh run in another --out (its ckpt_*.pt can be its --init)"
        keys = {"settings", "network", "optimizer", "iteration", "best"}
        if not isinstance(payload, dict) or keys - set(payload):
            missing = sorted(keys - set(payload)) if isinstance(payload, dict) else "all"
            raise UserError(f"{path} is not a training state (missing {missing}){fresh}")
        # runs from before the flags
        stored = {"batchnorm": "frozen", "objects": 1, **payload["settings"]}
        for key in ("model", "size", "frames", "batch", "queue", "loss", "batchnorm",
                    "objects"):
            if stored.get(key) != self.s.as_json()[key]:
                raise UserError(f"{path} was trained with {key} = {stored.get(key)}, not "
                                f"{self.s.as_json()[key]}; resume with the same settings")
        bad = non_finite(payload["network"])
        if bad:
            raise UserError(f"{path} holds non-finite weights ({', '.join(bad[:3])}){fresh}")
        try:
            self.network.load_state_dict({k: v.to(self.ctx.device)
                                          for k, v in payload["network"].items()})
            if self.embedding is not None:
                self.embedding.load_state_dict(payload["embedding"])
            self.optimizer.load_state_dict(payload["optimizer"])
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path} does not fit this run ({str(exc)[:200]}){fresh}") from None
        for group in self.optimizer.param_groups:  # --lr / --weight-decay of this call
            group["lr"], group["weight_decay"] = self.s.lr, self.s.weight_decay
        self.iteration = payload["iteration"]
        self.best = tuple(payload["best"]) if payload["best"] else None


def _unfinished(out: Path) -> list[Path]:
    """The files of a run that stopped before it saved its first state (bad data found
    late, or a signal during the first save): its log, checkpoints and temp files, which a
    new run into ``out`` may replace. Empty if ``out`` holds anything else."""
    if not out.is_dir() or (out / STATE).exists():
        return []
    entries = list(out.iterdir())
    ours = [p for p in entries if p.is_file() and (
        p.name in (LOG, "last.pt", "best.pt") or re.fullmatch(r"ckpt_\d{6}\.pt", p.name)
        or (p.name.startswith(".") and p.name.endswith(".tmp")))]
    return ours if len(ours) == len(entries) else []


def _check_out(out: Path, resume: bool) -> None:
    """--out must be empty, or a run to resume (--resume), or the leftovers of a run that
    never saved its state, which a new run starts over."""
    check_writable(out, "--out", folder=True)
    has_state = (out / STATE).is_file()
    leftovers = _unfinished(out)
    if resume and not has_state:
        why = (" (the run stopped before its first state was saved)" if leftovers else "")
        raise UserError(f"--resume: {out} holds no {STATE}{why}; drop --resume to start "
                        "the run" + (" over (its files are replaced)" if leftovers else ""))
    if not resume and out.exists() and any(out.iterdir()) and not leftovers:
        hint = "add --resume to continue it" if has_state else "choose an empty --out"
        raise UserError(f"{out} is not empty; {hint}")


def _trim_log(path: Path, iteration: int) -> None:
    """Drop the records of iterations after the resumed checkpoint (they are redone)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= iteration:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def train(s: TrainSettings, resume: bool = False, progress: bool = True,
          echo=print) -> TrainResult:
    """Runs to ``s.iters`` iterations in all (a resumed run continues its count); one
    rank of a torchrun job when started by torchrun. ``iters=0`` writes the initial
    weights (e.g. ImageNet trunks) as last.pt and stops."""
    ctx = distributed.start(s.device)
    try:
        return _train(s, ctx, resume, progress, echo if ctx.main else (lambda *_: None))
    finally:
        distributed.stop(ctx)


def _train(s: TrainSettings, ctx: distributed.Context, resume: bool, progress: bool,
           echo) -> TrainResult:
    from tqdm import tqdm

    if s.iters and not s.data and not s.static:
        raise UserError("no training data: give --data (DAVIS / YouTube-VOS layout) and/or "
                        "--static (images/ + masks/)")
    if s.data_repeats and len(s.data_repeats) != len(s.data):
        raise UserError(f"--data-repeat: give one per --data root ({len(s.data)}), in the "
                        f"same order, not {len(s.data_repeats)}")
    if s.val_every and s.val is None:
        raise UserError("--val-every needs --val (a DAVIS-layout folder of held-out clips)")
    if s.val is not None:
        check_val_root(s.val)
    if s.static_iters and not s.static:
        raise UserError("--static-iters needs --static (images/ + masks/)")
    if s.workers and not s.iters:
        raise UserError("--workers loads training clips; --iters 0 loads none")
    _check_out(s.out, resume)
    run = _Run(s, ctx)
    report = run.backbones.lines() if run.backbones else []
    for line in report:
        echo(line)
    leftovers = [] if resume else _unfinished(s.out)
    ctx.barrier()  # every rank has checked --out before rank 0 writes into it
    if ctx.main:
        s.out.mkdir(parents=True, exist_ok=True)
        for path in leftovers:  # an unfinished run's files: this run starts it over
            path.unlink(missing_ok=True)
        if leftovers:
            echo(f"{s.out}: started over (an earlier run there stopped before saving its "
                 f"state; removed {', '.join(sorted(p.name for p in leftovers))})")
    if resume:
        run.load_state()
        if ctx.main:
            _trim_log(s.out / LOG, run.iteration)
        echo(f"resumed {s.out} at iteration {run.iteration}")
    start = time.perf_counter()
    if s.iters == 0:
        if ctx.main:
            run.save_weights(s.out / "last.pt")
        echo(f"--iters 0: the initial weights are in {s.out / 'last.pt'}")
        return TrainResult(s.out, s.out / "last.pt", None, 0, None,
                           time.perf_counter() - start, ctx.rank, report)
    bar = tqdm(total=s.iters, initial=run.iteration, disable=not (progress and ctx.main),
               unit="it", dynamic_ncols=True)
    with open(s.out / LOG, "a") if ctx.main else contextlib.nullcontext() as log:
        for clips in run.batches():
            t0 = time.perf_counter()
            terms = run.step(clips)
            at_end = run.iteration == s.iters
            if not ctx.main:
                continue  # rank 0 alone logs, validates and saves
            record = {"iter": run.iteration, **terms, "sec": round(time.perf_counter() - t0, 3)}
            log.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix({k: f"{terms[k]:.3f}" for k in ("loss", "poly", "logit", "repr")})
            if s.val_every and (run.iteration % s.val_every == 0 or at_end):
                score = run.validate()
                log.write(json.dumps({"iter": run.iteration, "val_jf": score.jf,
                                      "val_j": score.j, "val_f": score.f}) + "\n")
                bar.write(f"iteration {run.iteration}: validation J&F {score.jf:.4f}")
                if run.best is None or score.jf > run.best[0]:
                    run.best = (score.jf, run.iteration)
                    run.save_weights(s.out / "best.pt")
            if run.iteration % s.save_every == 0 or at_end:
                run.save_weights(s.out / f"ckpt_{run.iteration:06d}.pt")
                run.save_weights(s.out / "last.pt")
                run.save_state()
            log.flush()
    bar.close()
    ctx.barrier()  # the files are written before any rank returns
    best = s.out / "best.pt" if run.best else None
    best_score = None
    if run.best:
        best_score = Score(run.best[0], float("nan"), float("nan"), 0)
    return TrainResult(s.out, s.out / "last.pt", best, run.iteration, best_score,
                       time.perf_counter() - start, ctx.rank, report)
