"""mvos-train, the teacher, training clips and mvos-soup, at small sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mobilevos_deploy.cli.soup import main as soup_main
from mobilevos_deploy.cli.train import main as train_main
from mobilevos_deploy.data.media import write_mask
from mobilevos_deploy.data.synthetic import scene_clip, shapes_clip, write_davis_clip
from mobilevos_deploy.inference.tracker import track_objects
from mobilevos_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.memory import initial_state
from mobilevos_deploy.model.stages import StepStage
from mobilevos_deploy.model.student import build_student
from mobilevos_deploy.train import soup as soup_module
from mobilevos_deploy.train.data import StaticClips, VideoClips, deform
from mobilevos_deploy.train.loop import student_clip, student_clip_objects
from mobilevos_deploy.train.teacher import (
    TeacherConfig,
    build_teacher,
    load_teacher,
    save_teacher,
)
from mobilevos_deploy.train.validate import Score

SIZE = "64x64"
SMALL_TEACHER = TeacherConfig(value_dim=32, query_dim=32, decoder_dims=(32, 32, 16))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    for i in range(3):
        write_davis_clip(shapes_clip(8, 64, 64, seed=i), root / "train", f"s{i}")
    write_davis_clip(shapes_clip(6, 64, 64, seed=99), root / "val", "v0")
    return root


def _train(args, expect=0):
    result = CliRunner().invoke(train_main, [*args, "--size", SIZE, "--no-progress"])
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def teacher_ckpt(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    _train(["--model", "teacher", "--out", str(out), "--data", str(dataset / "train"),
            "--iters", "2", "--batch", "1", "--frames", "3", "--lr", "1e-4",
            "--val", str(dataset / "val"), "--val-every", "2"])
    scores = [r["val_jf"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
              if "val_jf" in r]
    assert len(scores) == 1 and 0 <= scores[0] <= 1  # the teacher is validated as it trains
    return out / "last.pt"


def test_student_clip_runs_the_deployed_queue():
    # training unrolls the same finite queue as the exported step: same masks, frame by frame
    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0)
    clip = shapes_clip(5, 64, 64, seed=1)
    frames, first = clip.frames[None], clip.masks[:1, None]
    for queue in (1, 2, 3):
        with torch.no_grad():
            _, logits = student_clip(student, None, frames, first, queue)
            step = StepStage(student, queue)
            enc = student.key_encoder(frames[:, 0])
            state = initial_state(enc.key, student.encode_value(first, enc.f16), queue)
            for t in range(1, 5):
                prob, *state = step(frames[:, t], *state)
                torch.testing.assert_close(torch.sigmoid(logits[t - 1]), prob, atol=1e-5,
                                           rtol=1e-5)


def test_joint_objects_train_with_the_inference_semantics():
    """Objects trained jointly see exactly what the tracker does at inference (STCN's
    aggregation and other-objects channel); a clip with one present object trains as a
    single-object clip."""
    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0)
    clip = scene_clip(5, 64, 96, seed=4)
    labels = clip.ids()[0]
    first = torch.stack([(labels == k).float() for k in (1, 2)])  # K x H x W
    assert first.flatten(1).sum(1).min() > 0
    both = torch.tensor([[True, True]])
    for queue in (1, 2, 3):
        with torch.no_grad():
            _, logits = student_clip_objects(student, None, clip.frames[None], first[None],
                                             both, queue)
            expected = track_objects(student, clip.frames, first, queue)  # K x T x H x W
            got = torch.sigmoid(torch.stack(logits)[:, :, 0])  # T-1 x K x H x W
            torch.testing.assert_close(got.transpose(0, 1), expected[:, 1:], atol=2e-5,
                                       rtol=0)
            alone = torch.sigmoid(torch.stack(student_clip(student, None, clip.frames[None],
                                                           first[None, :1], queue)[1]))
            _, one = student_clip_objects(student, None, clip.frames[None], first[None],
                                          torch.tensor([[True, False]]), queue)
            # (float32: a batch of two objects rounds a little differently from one)
            torch.testing.assert_close(torch.sigmoid(torch.stack(one))[:, 0], alone[:, 0],
                                       atol=1e-5, rtol=0)
            if queue > 1:  # the two objects' memories see each other
                assert (got[1:, 0] - alone[1:, 0]).abs().max() > 1e-3


def test_video_clips_sample_several_objects(tmp_path):
    root = tmp_path / "scenes"
    for i in range(3):
        write_davis_clip(scene_clip(6, 64, 96, seed=i), root, f"s{i}")
    clips = VideoClips([root], (64, 64), frames=3, objects=3)
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(8):
        frames, masks = clips.sample(gen)
        assert frames.shape == (3, 3, 64, 64) and masks.shape == (3, 3, 64, 64)
        assert masks[0, 0].sum() >= 16  # the target
        assert (masks.sum(1) <= 1).all()  # objects do not overlap
        seen = max(seen, int((masks[0].flatten(1).sum(1) > 0).sum()))
    assert seen >= 2
    single = VideoClips([root], (64, 64), frames=3)
    assert single.sample(torch.Generator().manual_seed(0))[1].shape == (3, 64, 64)


def test_train_objects_jointly_with_distillation(dataset, teacher_ckpt, tmp_path):
    root = tmp_path / "scenes"
    for i in range(2):
        write_davis_clip(scene_clip(6, 64, 96, seed=i), root, f"s{i}")
    out = tmp_path / "run"
    _train(["--model", "mobilenetv2-noaspp", "--out", str(out), "--data", str(root),
            "--iters", "2", "--batch", "2", "--frames", "3", "--objects", "2",
            "--teacher", str(teacher_ckpt), "--lr", "1e-5", "--save-every", "2"])
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(r["logit"] > 0 and r["repr"] > 0 for r in steps)
    bad = _train(["--model", "mobilenetv2-noaspp", "--out", str(out), "--data", str(root),
                  "--iters", "4", "--batch", "2", "--frames", "3", "--teacher",
                  str(teacher_ckpt), "--resume"], expect=2)
    assert "objects" in bad.output


def test_teacher_memory_grows_every_k_frames_and_round_trips(tmp_path):
    teacher = build_teacher(SMALL_TEACHER, mem_every=2)
    clip = shapes_clip(6, 64, 64, seed=2)
    with torch.no_grad():
        memory = teacher.start(clip.frames[:1], clip.masks[:1, None])
        sizes = []
        for t in range(1, 6):
            out, memory = teacher.step(clip.frames[t:t + 1], memory)
            sizes.append(memory.keys.shape[2])
        assert out.features.shape == (1, 16, 16, 16) and out.logits.shape == (1, 1, 64, 64)
    hw = 4 * 4
    assert sizes == [hw, 2 * hw, 2 * hw, 3 * hw, 3 * hw]  # frames 2 and 4 are remembered
    path = save_teacher(tmp_path / "t.pt", teacher)
    again = load_teacher(path, mem_every=2)
    with torch.no_grad():
        a = teacher.clip(clip.frames[None], clip.masks[:1, None])[-1].logits
        b = again.clip(clip.frames[None], clip.masks[:1, None])[-1].logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_video_clips_sample_annotated_frames_and_one_target(dataset):
    clips = VideoClips([dataset / "train"], (48, 64), frames=5, max_skip=2)
    frames, masks = clips.sample(torch.Generator().manual_seed(0))
    assert frames.shape == (5, 3, 48, 64) and masks.shape == (5, 48, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks[0].sum() >= 16
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0


def test_static_clips_deform_image_and_mask_together(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 20:44] = (255, 255, 255)
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", (image[..., 0] > 0).astype(np.uint8))
    frames, masks = StaticClips([tmp_path], (64, 64), frames=4).sample(
        torch.Generator().manual_seed(0))
    assert frames.shape == (4, 3, 64, 64) and masks.shape == (4, 64, 64)
    assert not torch.equal(masks[0], masks[1])  # each frame is warped differently
    bright = frames[:, 0] > 0.5
    agree = (bright == (masks > 0.5)).float().mean()
    assert agree > 0.97  # the mask moved with the image
    # one grid for all channels: a channel copied before the warp stays a copy
    x = torch.rand(1, 1, 32, 32).repeat(1, 2, 1, 1)
    warped = deform(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(warped[:, 0], warped[:, 1])


def test_train_student_logs_every_term_validates_and_loads_for_export(dataset, teacher_ckpt,
                                                                      tmp_path):
    out = tmp_path / "run"
    _train(["--model", "mobilenetv2-noaspp", "--out", str(out), "--data",
            str(dataset / "train"), "--iters", "2", "--batch", "2", "--frames", "3",
            "--teacher", str(teacher_ckpt), "--val", str(dataset / "val"), "--val-every", "2",
            "--save-every", "1", "--lr", "1e-6"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "poly" in r]
    assert [r["iter"] for r in steps] == [1, 2]
    for r in steps:
        assert {"loss", "poly", "logit", "repr", "sampled"} <= set(r)
        assert r["logit"] > 0 and r["repr"] > 0 and r["sampled"] > 0
        assert r["loss"] == pytest.approx(r["poly"] + r["logit"] + r["repr"], rel=1e-5)
    assert [r for r in records if "val_jf" in r][0]["iter"] == 2
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "ckpt_000001.pt",
                                                "ckpt_000002.pt", "train_state.pt"}
    before = build_student(get_variant("mobilenetv2-noaspp").config, seed=0).state_dict()
    after = load_checkpoint(out / "last.pt").student.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("key_encoder") for k in changed)
    assert any(k.startswith("decoder") for k in changed)
    # frozen BatchNorm: no running statistic or affine parameter moved
    for name, module in load_checkpoint(out / "last.pt").student.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for key in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(after[f"{name}.{key}"], before[f"{name}.{key}"]), name
    # what mvos-export --ckpt loads (its exports of a saved checkpoint are gated in
    # test_export_gates.py::test_cli_exports_a_checkpoint_marked_trained; suite time)
    from mobilevos_deploy.model.checkpoint import student_for

    chosen = student_for(str(out / "last.pt"), None)
    assert chosen.trained and chosen.variant == "mobilenetv2-noaspp"
    assert all(torch.equal(v, after[k]) for k, v in chosen.student.state_dict().items())


def test_resume_continues_and_refuses_other_settings(dataset, tmp_path):
    out = tmp_path / "run"
    base = ["--model", "mobilenetv2-noaspp", "--out", str(out), "--data",
            str(dataset / "train"), "--batch", "1", "--frames", "3", "--loss", "ce+repr",
            "--omega", "0", "--lr", "1e-4"]
    _train([*base, "--iters", "3"])
    straight = (out / "last.pt").read_bytes()
    log = (out / "log.jsonl").read_text()
    for p in out.iterdir():
        p.unlink()
    _train([*base, "--iters", "2"])
    result = _train([*base, "--iters", "3", "--resume"])
    assert "resumed" in result.output
    assert [json.loads(x)["iter"] for x in (out / "log.jsonl").read_text().splitlines()] == [
        1, 2, 3]
    # same data, same random draws, same weights as the run that never stopped
    assert (out / "log.jsonl").read_text().splitlines()[-1].split('"sec"')[0] == \
        log.splitlines()[-1].split('"sec"')[0]
    a = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    (tmp_path / "straight.pt").write_bytes(straight)
    b = torch.load(tmp_path / "straight.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    bad = _train([*base, "--iters", "4", "--resume", "--batch", "2"], expect=2)
    assert "batch" in bad.output


def test_teacher_trains_with_the_memory_it_distils_with(tmp_path):
    from mobilevos_deploy.train.loop import TrainSettings, _Run
    from mobilevos_deploy.train.losses import LossConfig

    run = _Run(TrainSettings(model="teacher", out=tmp_path, iters=1, teacher_mem_every=1,
                             loss=LossConfig(logit=False, repr=False)))
    assert run.network.mem_every == 1


def test_resume_takes_this_calls_learning_rate(dataset, tmp_path):
    from mobilevos_deploy.train.loop import TrainSettings, _Run
    from mobilevos_deploy.train.losses import LossConfig

    base = dict(model="mobilenetv2-noaspp", out=tmp_path, iters=1, data=(dataset / "train",),
                size=(64, 64), batch=1, frames=3, loss=LossConfig(logit=False, repr=False))
    first = _Run(TrainSettings(**base, lr=1e-4))
    first.step()
    first.save_state()
    again = _Run(TrainSettings(**base, lr=3e-5, weight_decay=0.0))
    again.load_state()
    assert [(g["lr"], g["weight_decay"]) for g in again.optimizer.param_groups] == [
        (3e-5, 0.0)]
    assert again.iteration == 1


@pytest.mark.parametrize("extra, message", [
    ([], "no training data"),
    (["--data", "{train}", "--loss", "ce", "--val", "{missing}", "--val-every", "1"],
     "validation clips"),
    (["--data", "{train}", "--teacher", "{missing}"], "teacher checkpoint not found"),
    (["--data", "{train}", "--loss", "ce", "--static-iters", "5"], "--static"),
    (["--data", "{train}", "--loss", "ce+logit"], "--teacher"),
    (["--data", "{train}", "--teacher", "{student}"], "neither a teacher checkpoint"),
    (["--data", "{missing}", "--loss", "ce"], "JPEGImages"),
    (["--data", "{train}", "--loss", "ce", "--val-every", "2"], "--val"),
    (["--data", "{train}", "--loss", "ce", "--resume"], "--resume"),
])
def test_bad_input_exits_2_and_writes_nothing(dataset, tmp_path, extra, message):
    student = save_checkpoint(tmp_path / "student.pt",
                              build_student(get_variant("mobilenetv2").config), "mobilenetv2")
    paths = {"train": dataset / "train", "student": student, "missing": tmp_path / "nothing"}
    out = tmp_path / "run"
    args = [a.format(**paths) for a in extra]
    result = _train(["--model", "mobilenetv2-noaspp", "--out", str(out), "--iters", "1",
                     *args], expect=2)
    assert message in result.output
    assert not out.exists()


def test_nonempty_out_is_refused(dataset, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = _train(["--model", "mobilenetv2-noaspp", "--out", str(tmp_path / "run"),
                     "--data", str(dataset / "train"), "--iters", "1", "--loss", "ce"],
                    expect=2)
    assert "not empty" in result.output


def test_greedy_soup_keeps_only_ingredients_that_do_not_lower_the_score(monkeypatch, tmp_path):
    # a stand-in validation whose score peaks at one weight vector, so the greedy choice is
    # known: the best ingredient first, then each one only if the average scores higher
    cfg = get_variant("mobilenetv2-noaspp").config
    base = build_student(cfg, seed=0)
    key = "decoder.pred.bias"
    optimum = float(base.state_dict()[key]) + 1.0

    def score(student, *_args, **_kwargs):
        value = -abs(float(student.state_dict()[key]) - optimum)
        return Score(value, value, value, 1)

    monkeypatch.setattr(soup_module, "validate", score)
    monkeypatch.setattr(soup_module, "check_val_root", lambda root: None)
    paths = []
    for offset in (0.8, 1.4, 3.0, 1.0):  # → distances 0.2, 0.4, 2.0, 0.0
        student = build_student(cfg, seed=0)
        with torch.no_grad():
            student.decoder.pred.bias += offset
        paths.append(save_checkpoint(tmp_path / f"c{offset}.pt", student,
                                     "mobilenetv2-noaspp"))
    result = CliRunner().invoke(soup_main, [*map(str, paths), "--val", str(tmp_path),
                                            "--out", str(tmp_path / "soup.pt")])
    assert result.exit_code == 0, result.output
    # ranked 1.0 (0.0), 0.8 (0.2), 1.4 (0.4), 3.0 (2.0); averages: 1.0+0.8 → 0.9 worse;
    # 1.0+1.4 → 1.2 worse; 1.0+3.0 → 2.0 worse: only the best is kept
    soup = load_checkpoint(tmp_path / "soup.pt").student
    assert float(soup.state_dict()[key]) == pytest.approx(optimum, abs=1e-6)
    assert "1 of 4 checkpoints" in result.output
    paths2 = [paths[0], paths[1]]  # 0.8 and 1.4: their average 1.1 beats both
    result = CliRunner().invoke(soup_main, [*map(str, paths2), "--val", str(tmp_path),
                                            "--out", str(tmp_path / "soup2.pt")])
    assert result.exit_code == 0 and "2 of 2 checkpoints" in result.output, result.output
    soup2 = load_checkpoint(tmp_path / "soup2.pt").student
    assert float(soup2.state_dict()[key]) == pytest.approx(optimum + 0.1, abs=1e-6)


def test_soup_refuses_mixed_variants(tmp_path, dataset):
    a = save_checkpoint(tmp_path / "a.pt", build_student(get_variant("mobilenetv2").config),
                        "mobilenetv2")
    b = save_checkpoint(tmp_path / "b.pt",
                        build_student(get_variant("mobilenetv2-noaspp").config),
                        "mobilenetv2-noaspp")
    result = CliRunner().invoke(soup_main, [str(a), str(b), "--val", str(dataset / "val"),
                                            "--out", str(tmp_path / "soup.pt")])
    assert result.exit_code == 2 and "one variant" in result.output
    assert not (tmp_path / "soup.pt").exists()


def test_soup_checks_val_and_out_before_scoring(tmp_path, dataset):
    cfg = get_variant("mobilenetv2-noaspp").config
    paths = [save_checkpoint(tmp_path / f"{s}.pt", build_student(cfg, seed=s),
                             "mobilenetv2-noaspp") for s in (0, 1)]
    bad_val = CliRunner().invoke(soup_main, [*map(str, paths), "--val", str(tmp_path / "no"),
                                             "--out", str(tmp_path / "soup.pt")])
    assert bad_val.exit_code == 2 and "validation clips" in bad_val.output
    bad_out = CliRunner().invoke(soup_main, [*map(str, paths), "--val", str(dataset / "val"),
                                             "--out", str(tmp_path / "no" / "soup.pt")])
    assert bad_out.exit_code == 2 and "no such folder" in bad_out.output
    assert "J&F" not in bad_out.output  # refused before any validation ran


def test_soup_on_real_validation(dataset, tmp_path):
    cfg = get_variant("mobilenetv2-noaspp").config
    paths = [save_checkpoint(tmp_path / f"{s}.pt", build_student(cfg, seed=s),
                             "mobilenetv2-noaspp") for s in (0, 1)]
    result = CliRunner().invoke(soup_main, [*map(str, paths), "--val", str(dataset / "val"),
                                            "--size", SIZE, "--out", str(tmp_path / "soup.pt")])
    assert result.exit_code == 0, result.output
    assert "validation J&F" in result.output
    load_checkpoint(tmp_path / "soup.pt")


def test_learning_rate_schedules():
    from mobilevos_deploy.train.loop import TrainSettings, learning_rate

    s = TrainSettings(model="mobilenetv2-noaspp", out=Path("x"), iters=100, lr=1e-3)
    assert [learning_rate(s, i) for i in (0, 50, 99)] == [1e-3] * 3
    cosine = TrainSettings(model="mobilenetv2-noaspp", out=Path("x"), iters=100, lr=1e-3,
                           schedule="cosine")
    assert learning_rate(cosine, 0) == pytest.approx(1e-3)
    assert learning_rate(cosine, 50) == pytest.approx(5e-4)
    assert learning_rate(cosine, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mode", ["frozen", "train"])
def test_batchnorm_is_trained_only_when_asked_and_stays_so_after_validation(dataset, tmp_path,
                                                                            mode):
    """--batchnorm train moves the running statistics and the affine parameters; frozen
    keeps both as loaded, also after a validation (which switches the network to eval and
    back: that once left BatchNorm training after the first validation)."""
    out = tmp_path / "run"
    _train(["--model", "mobilenetv2-noaspp", "--out", str(out), "--data", str(dataset / "train"),
            "--iters", "2", "--batch", "2", "--frames", "2", "--lr", "1e-3", "--loss", "ce",
            "--val", str(dataset / "val"), "--val-every", "1", "--batchnorm", mode])
    start = build_student(get_variant("mobilenetv2-noaspp").config, seed=0).state_dict()
    end = load_checkpoint(out / "last.pt").student.state_dict()
    bn = [k for k in start if k.startswith("key_encoder.trunk.") and
          k.endswith(("running_mean", "weight")) and k.replace("weight", "running_mean") in start]
    changed = [k for k in bn if not torch.equal(start[k], end[k])]
    if mode == "frozen":
        assert changed == []
    else:
        assert len(changed) == len(bn)


def test_training_from_random_weights_starts_the_keys_at_full_gain():
    """The seeded student's key projection is orthogonal with gain 0.15 (for the gates);
    sharpen_keys makes it orthogonal with gain 1, so attention is not near-uniform."""
    from mobilevos_deploy.train.loop import KEY_GAIN, sharpen_keys

    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0)
    weight = student.key_encoder.key_proj.weight
    rows = lambda w: w.detach().flatten(1) @ w.detach().flatten(1).T  # noqa: E731
    eye = torch.eye(weight.shape[0])
    torch.testing.assert_close(rows(weight), 0.15**2 * eye, atol=1e-5, rtol=0)
    sharpen_keys(student, seed=0)
    torch.testing.assert_close(rows(student.key_encoder.key_proj.weight), KEY_GAIN**2 * eye,
                               atol=1e-5, rtol=0)


def test_soup_refuses_the_same_checkpoint_twice(tmp_path, dataset):
    """``a.pt a.pt``, or a copy of it, would count as two ingredients of one network."""
    cfg = get_variant("mobilenetv2-noaspp").config
    a = save_checkpoint(tmp_path / "a.pt", build_student(cfg, seed=0), "mobilenetv2-noaspp")
    copy = tmp_path / "copy.pt"
    copy.write_bytes(a.read_bytes())
    for pair in ((a, a), (a, copy)):
        result = CliRunner().invoke(soup_main, [*map(str, pair), "--val", str(dataset / "val"),
                                                "--out", str(tmp_path / "soup.pt")])
        assert result.exit_code == 2 and "hold the same bytes" in result.output, result.output
        assert not (tmp_path / "soup.pt").exists()


def test_a_run_that_stopped_before_its_first_state_is_started_over(dataset, tmp_path):
    """The leftovers of a run that never saved its state (a log, a checkpoint cut by
    Ctrl-C during the first save, a temp file): --resume says it cannot resume and that
    dropping it starts over; without it the run starts over. A user's file among them still
    makes the folder not ours."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"iter": 1, "loss": 1.0}\n')
    (out / "ckpt_000001.pt").write_bytes(b"cut short")
    (out / ".train_state.pt.abc.tmp").write_bytes(b"")
    args = ["--model", "mobilenetv2-noaspp", "--out", str(out), "--data",
            str(dataset / "train"), "--iters", "1", "--loss", "ce"]
    result = _train([*args, "--resume"], expect=2)
    assert "before its first state was saved" in result.output
    assert "drop --resume to start the run over" in result.output
    result = _train(args, expect=0)
    assert "started over" in result.output
    assert (out / "train_state.pt").is_file() and not (out / ".train_state.pt.abc.tmp").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # this run's only
    (out / "train_state.pt").unlink()
    (out / "notes.txt").write_text("mine")
    assert "not empty" in _train(args, expect=2).output
