"""MobileVOS's training loss (paper eqs. 1-10): poly-1 cross-entropy + logit distillation on
boundary pixels + the correlation (representation) loss unifying distillation and
supervised contrastive learning.

Shapes, for one batch of frames (a sequence's frames are flattened into the batch):
  logits      B x 1 x H x W - mask logits at full resolution (student or teacher)
  features    B x D x h x w - Z, taken before the final conv and upsampling (h = H/4)
  target      B x H x W     - 1.0 on the object, 0.0 on the background
  boundary    B x h x w     - True at sampled pixels (see :func:`boundary_pixels`)

The masks are binary (object vs background): a multi-object frame is trained one object
at a time, the others being background, as the student also runs one object at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def poly1_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 1.0,
                        top_ratio: float = 1.0) -> torch.Tensor:
    """Poly-1 loss, CE + epsilon * (1 - p_t), per pixel of the binary mask; the mean over
    all pixels, or over the hardest ``top_ratio`` of them (STCN's bootstrapped CE)."""
    logit = logits[:, 0]
    ce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    p_true = torch.where(target > 0.5, torch.sigmoid(logit), torch.sigmoid(-logit))
    loss = (ce + epsilon * (1.0 - p_true)).flatten(1)  # B x HW
    if top_ratio < 1.0:
        k = max(1, int(round(top_ratio * loss.shape[1])))
        loss = loss.topk(k, dim=1).values
    return loss.mean()


def downsample_target(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x H x W binary mask → B x h x w object fraction of each low-resolution cell."""
    return F.adaptive_avg_pool2d(target[:, None].float(), size)[:, 0]


def boundary_pixels(target: torch.Tensor, size: tuple[int, int], radius: int = 1) -> torch.Tensor:
    """Pixels on or near the object boundary, at the features' resolution: B x h x w bool.

    The Sobel gradient of the downsampled (area-averaged) mask is non-zero wherever the
    object fraction changes, so an object smaller than one cell still marks its
    neighbourhood; the edge map is then dilated by ``radius`` cells (a square window).
    """
    low = downsample_target(target, size)[:, None]  # B x 1 x h x w
    kernels = torch.stack([SOBEL, SOBEL.t()])[:, None].to(low)  # 2 x 1 x 3 x 3
    grad = F.conv2d(F.pad(low, (1, 1, 1, 1), mode="replicate"), kernels)
    edges = grad.abs().sum(dim=1, keepdim=True) > 1e-6
    if radius > 0:
        window = 2 * radius + 1
        edges = F.max_pool2d(edges.float(), window, stride=1, padding=radius) > 0
    return edges[:, 0]


def random_pixels(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The random-sampling ablation: as many pixels per frame as ``like`` (B x h x w bool)
    marks, drawn uniformly from the whole frame."""
    b, h, w = like.shape
    picked = torch.zeros(b, h * w, dtype=torch.bool)
    for i, count in enumerate(like.flatten(1).sum(dim=1).tolist()):
        picked[i, torch.randperm(h * w, generator=generator)[: int(count)]] = True
    return picked.view(b, h, w).to(like.device)


def cap_samples(pixels: torch.Tensor, limit: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep at most ``limit`` sampled pixels per frame (a random subset), bounding the
    N x N correlation matrices."""
    flat = pixels.flatten(1).clone()
    for i in range(flat.shape[0]):
        where = flat[i].nonzero()[:, 0]
        if len(where) > limit:
            drop = where[torch.randperm(len(where), generator=generator)[limit:]]
            flat[i, drop] = False
    return flat.view_as(pixels)


def correlation_loss(z_student: torch.Tensor, z_teacher: torch.Tensor | None,
                     labels: torch.Tensor, omega: float) -> torch.Tensor:
    """One frame's representation loss over its N sampled pixels (eqs. 4-8):

        C_s = Z_s Z_s^T,  C_ty = omega * Z_t Z_t^T + (1 - omega) * Y Y^T
        L = (log2 |C_s|^2 - log2 |C_s * C_ty|^2) / N       (Frobenius norms)

    z_student: N x D, z_teacher: N x D' (or None when omega = 0); both are L2-normalised
    here, per pixel. labels: N, 1.0 object / 0.0 background (Y is its one-hot).
    L >= 0 because |entries of C_ty| <= 1; it is 0 when the student's correlations live
    only where the target's are +-1.
    """
    zs = F.normalize(z_student, dim=1)
    c_s = zs @ zs.t()
    y = torch.stack([1.0 - labels, labels], dim=1)
    c_ty = (1.0 - omega) * (y @ y.t())
    if omega > 0:
        if z_teacher is None:
            raise ValueError("omega > 0 needs the teacher's features")
        zt = F.normalize(z_teacher, dim=1)
        c_ty = c_ty + omega * (zt @ zt.t())
    total = c_s.pow(2).sum()
    matched = (c_s * c_ty).pow(2).sum()
    return (torch.log2(total) - torch.log2(matched)) / zs.shape[0]


def representation_loss(z_student: torch.Tensor, z_teacher: torch.Tensor | None,
                        target: torch.Tensor, pixels: torch.Tensor,
                        omega: float) -> tuple[torch.Tensor, int]:
    """The mean of :func:`correlation_loss` over frames with at least 2 sampled pixels;
    (0, 0) when no frame has any (the term is skipped, never NaN). Returns (loss, frames).

    z_student: B x D x h x w, z_teacher: B x D' x h x w or None, target: B x H x W,
    pixels: B x h x w bool.
    """
    size = tuple(z_student.shape[-2:])
    labels = (downsample_target(target, size) >= 0.5).float()  # B x h x w
    losses = []
    for i in range(z_student.shape[0]):
        where = pixels[i]
        if int(where.sum()) < 2:
            continue
        zs = z_student[i].permute(1, 2, 0)[where]  # N x D
        zt = None if z_teacher is None else z_teacher[i].permute(1, 2, 0)[where]
        losses.append(correlation_loss(zs, zt, labels[i][where], omega))
    if not losses:
        return z_student.sum() * 0.0, 0
    return torch.stack(losses).mean(), len(losses)


def logit_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       pixels: torch.Tensor, tau: float = 0.1) -> tuple[torch.Tensor, int]:
    """KL(p_T(tau) || p_S(tau)) of the two-class (object / background) distributions at the
    sampled pixels, averaged over them. ``pixels`` is at the features' resolution and
    covers the same full-resolution pixels it stands for. Returns (loss, pixels used)."""
    scale = student_logits.shape[-1] // pixels.shape[-1]
    full = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    count = int(full.sum())
    if count == 0:
        return student_logits.sum() * 0.0, 0
    zs = student_logits[:, 0][full] / tau
    zt = teacher_logits[:, 0][full].detach() / tau
    # two classes with logits (z, 0): log p = -softplus(-z), log (1 - p) = -softplus(z)
    log_ps = torch.stack([-F.softplus(-zs), -F.softplus(zs)])
    log_pt = torch.stack([-F.softplus(-zt), -F.softplus(zt)])
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=0)
    return kl.mean(), count


@dataclass(frozen=True)
class LossConfig:
    """Which terms are on and their settings; the defaults are the paper's."""

    logit: bool = True  # logit distillation on the sampled pixels
    repr: bool = True  # the correlation (representation) loss
    omega: float = 0.95  # 0 for the ResNet18 student, 0.95 for the MobileNetV2 students
    tau: float = 0.1
    epsilon: float = 1.0  # poly-1
    top_ratio: float = 1.0  # < 1: bootstrapped CE over the hardest pixels
    sampling: str = "boundary"  # "boundary" | "random" (ablation: same count, anywhere)
    radius: int = 1  # boundary dilation, in feature cells (4 pixels each)
    max_samples: int = 1024  # per frame in the correlation loss, bounds its N x N matrices

    @property
    def needs_teacher(self) -> bool:
        return self.logit or (self.repr and self.omega > 0)


@dataclass
class LossTerms:
    total: torch.Tensor
    poly: float
    logit: float
    repr: float
    sampled: int  # pixels sampled over the batch, at feature resolution

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "poly": self.poly, "logit": self.logit,
                "repr": self.repr, "sampled": self.sampled}


def mobilevos_loss(cfg: LossConfig, target: torch.Tensor, student_logits: torch.Tensor,
                   student_embedding: torch.Tensor | None = None,
                   teacher_logits: torch.Tensor | None = None,
                   teacher_features: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> LossTerms:
    """L = L_poly + L_logit + L_repr for a batch of frames (shapes in the module doc).

    ``student_embedding`` is the student's representation after its extra linear
    embedding; the teacher's outputs are detached, so gradients reach the student only.
    """
    poly = poly1_cross_entropy(student_logits, target, cfg.epsilon, cfg.top_ratio)
    total, logit_value, repr_value, sampled = poly, 0.0, 0.0, 0
    if cfg.logit or cfg.repr:
        if student_embedding is None:
            raise ValueError("the distillation terms need the student's embedding")
        size = tuple(student_embedding.shape[-2:])
        pixels = boundary_pixels(target, size, cfg.radius)
        if cfg.sampling == "random":
            pixels = random_pixels(pixels, generator)
        elif cfg.sampling != "boundary":
            raise ValueError(f"sampling must be 'boundary' or 'random', got {cfg.sampling!r}")
        sampled = int(pixels.sum())
        if cfg.logit:
            if teacher_logits is None:
                raise ValueError("logit distillation needs the teacher's logits")
            kd, _ = logit_distillation(student_logits, teacher_logits, pixels, cfg.tau)
            total, logit_value = total + kd, float(kd.detach())
        if cfg.repr:
            zt = None if teacher_features is None else teacher_features.detach()
            capped = cap_samples(pixels, cfg.max_samples, generator)
            rep, _ = representation_loss(student_embedding, zt, target, capped, cfg.omega)
            total, repr_value = total + rep, float(rep.detach())
    return LossTerms(total, float(poly.detach()), logit_value, repr_value, sampled)
