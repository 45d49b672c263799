"""Properties of the MobileVOS loss (not copies of its formula): what each term rewards,
where it samples, that it stays finite, and that gradients reach the student only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mobilevos_deploy.train.losses import (
    LossConfig,
    boundary_pixels,
    cap_samples,
    correlation_loss,
    logit_distillation,
    mobilevos_loss,
    poly1_cross_entropy,
    random_pixels,
    representation_loss,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _square(size: int = 64, lo: int = 16, hi: int = 40) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, lo:hi, lo:hi] = 1.0
    return mask


# -- the representation loss ----------------------------------------------------------------

def test_omega1_aligned_student_reaches_the_minimum_for_clustered_teacher():
    # a teacher whose pixels fall in orthogonal clusters: C_t holds only 0 and 1, so L >= 0
    # and the aligned student is at L = 0 exactly, while unrelated students are above it
    gen = _gen()
    centres = torch.eye(8)[:4]
    zt = centres[torch.randint(4, (60,), generator=gen)] + 0.0
    labels = torch.zeros(60)
    aligned = correlation_loss(zt.clone(), zt, labels, omega=1.0)
    assert abs(float(aligned)) < 1e-6
    for seed in range(5):
        other = torch.randn(60, 8, generator=_gen(seed))
        assert float(correlation_loss(other, zt, labels, omega=1.0)) > 1e-3


def test_omega1_shuffled_teacher_scores_higher_than_aligned():
    gen = _gen(1)
    zt = torch.randn(80, 16, generator=gen)
    zs = zt.clone()
    labels = (torch.rand(80, generator=gen) > 0.5).float()
    aligned = float(correlation_loss(zs, zt, labels, omega=1.0))
    for seed in range(5):
        perm = torch.randperm(80, generator=_gen(10 + seed))
        shuffled = float(correlation_loss(zs, zt[perm], labels, omega=1.0))
        assert shuffled > aligned + 1e-4, (seed, shuffled, aligned)


def test_loss_is_never_negative():
    for seed in range(10):
        gen = _gen(seed)
        zs, zt = torch.randn(40, 8, generator=gen), torch.randn(40, 12, generator=gen)
        labels = (torch.rand(40, generator=gen) > 0.3).float()
        for omega in (0.0, 0.5, 0.95, 1.0):
            assert float(correlation_loss(zs, zt, labels, omega)) >= -1e-7


def test_omega0_rewards_features_that_cluster_by_label():
    gen = _gen(2)
    labels = (torch.rand(50, generator=gen) > 0.5).float()
    u, v = torch.eye(6)[0], torch.eye(6)[1]
    by_label = torch.where(labels[:, None] > 0.5, u, v)
    wrong = by_label[torch.randperm(50, generator=gen)]  # clusters unrelated to the labels
    noise = torch.randn(50, 6, generator=gen)
    good = float(correlation_loss(by_label, None, labels, omega=0.0))
    assert abs(good) < 1e-6
    assert float(correlation_loss(wrong, None, labels, omega=0.0)) > good + 1e-3
    assert float(correlation_loss(noise, None, labels, omega=0.0)) > good + 1e-3


def test_omega0_gradient_descent_separates_the_labels():
    gen = _gen(3)
    labels = (torch.rand(64, generator=gen) > 0.5).float()
    z = torch.randn(64, 8, generator=gen).requires_grad_(True)
    optim = torch.optim.Adam([z], lr=0.05)

    def cross_label_cos() -> float:
        zn = F.normalize(z.detach(), dim=1)
        cos = zn @ zn.t()
        return float(cos[labels[:, None] != labels[None, :]].abs().mean())

    before_loss = float(correlation_loss(z.detach(), None, labels, 0.0))
    before_cos = cross_label_cos()
    for _ in range(200):
        optim.zero_grad()
        correlation_loss(z, None, labels, 0.0).backward()
        optim.step()
    assert float(correlation_loss(z.detach(), None, labels, 0.0)) < 0.2 * before_loss
    assert cross_label_cos() < 0.5 * before_cos


def test_omega_needs_teacher_features():
    with pytest.raises(ValueError, match="teacher"):
        correlation_loss(torch.randn(5, 3), None, torch.zeros(5), omega=0.5)


# -- sampling ---------------------------------------------------------------------------------

def test_boundary_pixels_follow_the_edge():
    mask = _square()  # object rows/cols 16..39 at 64x64 → cells 4..9 at 16x16
    edge = boundary_pixels(mask, (16, 16), radius=0)[0]
    assert edge[4, 6] and edge[9, 6] and edge[6, 4]  # on the sides
    assert not edge[6, 6] and not edge[0, 0] and not edge[15, 15]  # inside, far outside
    wider = boundary_pixels(mask, (16, 16), radius=1)[0]
    assert int(wider.sum()) > int(edge.sum())
    assert bool((wider | edge).eq(wider).all())  # dilation only adds pixels


def test_tiny_object_still_marks_its_neighbourhood():
    mask = torch.zeros(1, 64, 64)
    mask[0, 30, 30] = 1.0  # one pixel: 1/16 of a stride-4 cell
    edge = boundary_pixels(mask, (16, 16), radius=1)[0]
    assert edge[7, 7] and int(edge.sum()) > 0
    assert not edge[0, 0]


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_uniform_frame_has_no_boundary(value):
    mask = torch.full((2, 64, 64), value)
    assert int(boundary_pixels(mask, (16, 16), radius=2).sum()) == 0


def test_random_sampling_draws_the_same_count_anywhere():
    mask = _square()
    edge = boundary_pixels(mask, (16, 16), radius=1)
    picked = random_pixels(edge, _gen())
    assert int(picked.sum()) == int(edge.sum())
    assert bool((picked & ~edge).any())  # not just the boundary


def test_random_sampling_switch_in_the_loss():
    s_logit, s_embed, t_logit, t_feat = _outputs(2)
    target = torch.cat([_square(), _square(lo=30, hi=34)])
    boundary = mobilevos_loss(LossConfig(), target, s_logit, s_embed, t_logit, t_feat, _gen())
    rand = mobilevos_loss(LossConfig(sampling="random"), target, s_logit, s_embed, t_logit,
                          t_feat, _gen())
    assert rand.sampled == boundary.sampled > 0
    assert rand.logit != pytest.approx(boundary.logit)  # other pixels, other values
    wider = mobilevos_loss(LossConfig(radius=3), target, s_logit, s_embed, t_logit, t_feat,
                           _gen())
    assert wider.sampled > boundary.sampled


def test_cap_samples_bounds_each_frame():
    pixels = torch.ones(3, 16, 16, dtype=torch.bool)
    pixels[1] = False
    capped = cap_samples(pixels, 50, _gen())
    assert capped.flatten(1).sum(dim=1).tolist() == [50, 0, 50]
    assert bool((capped & ~pixels).sum() == 0)


# -- logit distillation and poly-1 ------------------------------------------------------------

def test_logit_distillation_zero_when_equal_and_only_on_sampled_pixels():
    gen = _gen(4)
    teacher = torch.randn(1, 1, 64, 64, generator=gen)
    pixels = boundary_pixels(_square(), (16, 16), radius=0)
    same, count = logit_distillation(teacher.clone(), teacher, pixels, tau=0.1)
    assert count == int(pixels.sum()) * 16
    assert abs(float(same)) < 1e-6
    other = teacher + torch.randn(1, 1, 64, 64, generator=gen)
    assert float(logit_distillation(other, teacher, pixels, 0.1)[0]) > 1e-3
    # changing the student away from the sampled pixels changes nothing
    away = ~pixels.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]
    moved = torch.where(away, other + 5.0, other)
    assert math.isclose(float(logit_distillation(moved, teacher, pixels, 0.1)[0]),
                        float(logit_distillation(other, teacher, pixels, 0.1)[0]), rel_tol=1e-6)


def test_lower_temperature_sharpens_the_targets():
    teacher = torch.full((1, 1, 64, 64), 0.5)
    student = torch.full((1, 1, 64, 64), -0.5)
    pixels = boundary_pixels(_square(), (16, 16))
    soft = float(logit_distillation(student, teacher, pixels, tau=4.0)[0])
    sharp = float(logit_distillation(student, teacher, pixels, tau=0.1)[0])
    assert sharp > soft > 0


def test_poly1_is_cross_entropy_plus_the_confidence_gap():
    gen = _gen(5)
    logits = torch.randn(2, 1, 16, 16, generator=gen)
    target = (torch.rand(2, 16, 16, generator=gen) > 0.5).float()
    ce = F.binary_cross_entropy_with_logits(logits[:, 0], target)
    assert torch.allclose(poly1_cross_entropy(logits, target, epsilon=0.0), ce)
    assert float(poly1_cross_entropy(logits, target, epsilon=1.0)) > float(ce)
    confident = (target[:, None] * 2 - 1) * 30.0
    assert float(poly1_cross_entropy(confident, target)) < 1e-6
    hardest = poly1_cross_entropy(logits, target, top_ratio=0.1)
    assert float(hardest) > float(poly1_cross_entropy(logits, target))


# -- the whole loss ---------------------------------------------------------------------------

def _outputs(batch: int, seed: int = 0):
    gen = _gen(seed)
    return (torch.randn(batch, 1, 64, 64, generator=gen).requires_grad_(True),
            torch.randn(batch, 8, 16, 16, generator=gen).requires_grad_(True),
            torch.randn(batch, 1, 64, 64, generator=gen),
            torch.randn(batch, 12, 16, 16, generator=gen))


@pytest.mark.parametrize("case", ["all-background", "all-object", "tiny", "mixed"])
def test_finite_for_empty_boundaries_and_tiny_objects(case):
    target = {"all-background": torch.zeros(2, 64, 64), "all-object": torch.ones(2, 64, 64),
              "tiny": torch.zeros(2, 64, 64), "mixed": torch.cat([_square(), torch.zeros(1, 64,
                                                                                       64)])}[case]
    if case == "tiny":
        target[:, 5, 60] = 1.0
    s_logit, s_embed, t_logit, t_feat = _outputs(2)
    terms = mobilevos_loss(LossConfig(), target, s_logit, s_embed, t_logit, t_feat, _gen())
    assert torch.isfinite(terms.total)
    terms.total.backward()
    assert torch.isfinite(s_logit.grad).all() and torch.isfinite(s_embed.grad).all()
    if case in ("all-background", "all-object"):
        assert terms.sampled == 0 and terms.logit == 0.0 and terms.repr == 0.0
    else:
        assert terms.sampled > 0


def test_representation_loss_skips_frames_without_samples():
    s_embed = torch.randn(2, 8, 16, 16)
    target = torch.cat([_square(), torch.zeros(1, 64, 64)])
    pixels = boundary_pixels(target, (16, 16))
    loss, frames = representation_loss(s_embed, None, target, pixels, omega=0.0)
    assert frames == 1 and torch.isfinite(loss)
    none, zero = representation_loss(s_embed, None, torch.zeros(2, 64, 64),
                                     torch.zeros(2, 16, 16, dtype=torch.bool), 0.0)
    assert zero == 0 and float(none) == 0.0


def test_gradients_reach_the_student_only():
    from mobilevos_deploy.train.teacher import TeacherConfig, build_teacher

    teacher = build_teacher(TeacherConfig(value_dim=32, query_dim=32,
                                          decoder_dims=(32, 32, 16)), mem_every=1)
    frames = torch.rand(1, 3, 3, 64, 64, generator=_gen(6))
    target = _square().repeat(2, 1, 1)
    outs = teacher.clip(frames, _square()[:, None])  # with autograd on: the loss must detach
    s_logit, s_embed, _, _ = _outputs(2)
    terms = mobilevos_loss(LossConfig(), target, s_logit, s_embed,
                           torch.cat([o.logits for o in outs]),
                           torch.cat([o.features for o in outs]), _gen())
    terms.total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert s_logit.grad.abs().sum() > 0 and s_embed.grad.abs().sum() > 0


def test_terms_switch_off_and_bad_sampling_is_refused():
    s_logit, s_embed, t_logit, t_feat = _outputs(1)
    target = _square()
    ce_only = mobilevos_loss(LossConfig(logit=False, repr=False), target, s_logit)
    assert ce_only.logit == 0.0 and ce_only.repr == 0.0 and ce_only.sampled == 0
    assert math.isclose(float(ce_only.total), ce_only.poly, rel_tol=1e-6)
    full = mobilevos_loss(LossConfig(), target, s_logit, s_embed, t_logit, t_feat, _gen())
    assert full.logit > 0 and full.repr > 0
    assert math.isclose(float(full.total), full.poly + full.logit + full.repr, rel_tol=1e-5)
    with pytest.raises(ValueError, match="sampling"):
        mobilevos_loss(LossConfig(sampling="edges"), target, s_logit, s_embed, t_logit, t_feat)
