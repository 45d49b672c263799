"""mvos-run and mvos-eval: DAVIS-layout folders and video files, every backend, several
objects, task-level parity, and every bad input leaving nothing behind."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mobilevos_deploy.cli import eval as eval_cli
from mobilevos_deploy.cli import run as run_cli
from mobilevos_deploy.data.media import davis_palette, read_mask, write_mask
from mobilevos_deploy.data.synthetic import (
    moving_object_clip,
    scene_clip,
    shapes_clip,
    write_davis_clip,
)
from mobilevos_deploy.inference.backends import TorchBackend, open_backend
from mobilevos_deploy.inference.runner import run_video
from mobilevos_deploy.inference.segment import Letterbox, aggregate
from mobilevos_deploy.inference.tracker import track_objects
from mobilevos_deploy.metrics.evaluate import evaluate
from mobilevos_deploy.model.checkpoint import student_for
from mobilevos_deploy.model.stages import InitStage, StepStage
from mobilevos_deploy.train.validate import validate

from .conftest import EXPORT_HEIGHT, EXPORT_WIDTH, TRAINED

VARIANT = "mobilenetv2-noaspp"
FRAMES, SRC_H, SRC_W = 8, 60, 90  # not the model's size: the letterbox is exercised


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    clip = moving_object_clip(FRAMES, SRC_H, SRC_W, seed=4, occluder_from=0.85)
    write_davis_clip(clip, root, "synth")
    return root


def _paths(root):
    return (root / "JPEGImages/480p/synth", root / "Annotations/480p/synth/00000.png",
            root / "Annotations/480p")


def _invoke(cli, args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def test_palette_is_davis():
    pal = davis_palette()
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0] and pal[255].tolist() == [224, 224, 192]


def test_letterbox_keeps_the_aspect_ratio_and_comes_back():
    box = Letterbox(60, 90, 64, 96)
    assert box.inner == (0, 0, 64, 96)  # 60x90 scales to 64x96 exactly
    box = Letterbox(100, 100, 64, 96)
    top, left, ih, iw = box.inner
    assert (top, left, ih, iw) == (0, 16, 64, 64)
    ids = np.zeros((100, 100), np.uint8)
    ids[20:60, 30:70] = 1
    placed = box.mask(ids == 1)[0, 0]
    assert placed[:, :16].sum() == 0 and placed[:, 80:].sum() == 0  # the border stays empty
    back = box.back(placed) > 0.5
    assert (back == (ids == 1)).mean() > 0.98


def test_soft_aggregation():
    p1 = np.array([[0.9, 0.2, 0.6, 0.1]])
    p2 = np.array([[0.5, 0.7, 0.6, 0.2]])
    # background prod(1 - p) = [0.05, 0.24, 0.16, 0.72]: the largest logit wins
    assert aggregate([p1, p2], [1, 2]).tolist() == [[1, 2, 1, 0]]
    # one object: the same as thresholding at 0.5
    p = np.random.default_rng(0).random((5, 7))
    assert (aggregate([p], [3]) == np.where(p > 0.5, 3, 0)).all()


def test_torch_backend_is_the_reference_for_one_and_several_objects(students):
    student = students[VARIANT]
    backend = TorchBackend(student, 3, EXPORT_HEIGHT, EXPORT_WIDTH)
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 1, 3, EXPORT_HEIGHT, EXPORT_WIDTH, generator=gen).numpy()
    masks = [(torch.rand(1, 1, EXPORT_HEIGHT, EXPORT_WIDTH, generator=gen) > t).float().numpy()
             for t in (0.3, 0.7)]
    # one object: exactly the single-object init and step graphs' modules
    init, step = InitStage(student, 3).eval(), StepStage(student, 3).eval()
    (state,) = backend.init(frames[0], masks[:1])
    with torch.no_grad():
        ref = init(torch.from_numpy(frames[0]), torch.from_numpy(masks[0]))
    for a, b in zip(state, ref, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    (prob,), (new,) = backend.step(frames[1], [state])
    with torch.no_grad():
        ref = step(torch.from_numpy(frames[1]), *(torch.from_numpy(s) for s in state))
    np.testing.assert_allclose(prob, ref[0][0, 0].numpy(), atol=1e-6, rtol=0)
    for a, b in zip(new, ref[1:], strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-6, rtol=0)
    # two objects: the multi-object reference tracker, frame by frame
    states = backend.init(frames[0], masks)
    got = []
    for t in range(1, 4):
        probs, states = backend.step(frames[t], states)
        got.append(np.stack(probs))
    expected = track_objects(student, torch.from_numpy(frames[:, 0]),
                             torch.from_numpy(np.concatenate(masks)[:, 0]), 3)
    np.testing.assert_allclose(np.stack(got, 1), expected[:, 1:].numpy(), atol=1e-5, rtol=0)
    assert not np.allclose(got[-1][0], got[-1][1])  # the two objects really differ


def test_run_writes_davis_masks_for_every_frame(clip_root, tmp_path):
    frames, mask, _ = _paths(clip_root)
    out = tmp_path / "res" / "synth"
    result = _invoke(run_cli, ["--backend", "torch", "--frames", frames, "--mask", mask,
                               "--out", out, "--overlay", tmp_path / "sheet.png"])
    assert result.exit_code == 0, result.output
    assert "objects [1, 2]" in result.output and "median" in result.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"{t:05d}.png" for t in range(FRAMES)]
    with Image.open(out / "00003.png") as image:
        assert image.mode == "P" and image.size == (SRC_W, SRC_H)
        assert image.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert (read_mask(out / "00000.png") == read_mask(mask)).all()
    assert set(np.unique(np.stack([read_mask(p) for p in out.glob("*.png")]))) <= {0, 1, 2}
    record = json.loads((out / "run.json").read_text())
    assert record["backend"] == "torch" and len(record["step_ms"]) == FRAMES - 1
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 320
    # a rerun replaces the folder it wrote
    again = _invoke(run_cli, ["--backend", "torch", "--frames", frames, "--mask", mask,
                              "--out", out])
    assert again.exit_code == 0, again.output
    assert not list(tmp_path.joinpath("res").glob(".synth.*"))  # no staging left


def test_video_file_input(clip_root, tmp_path):
    frames, mask, _ = _paths(clip_root)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SRC_W, SRC_H))
    for f in sorted(frames.glob("*.jpg")):
        writer.write(cv2.imread(str(f)))
    writer.release()
    out = tmp_path / "video_out"
    result = _invoke(run_cli, ["--backend", "torch", "--frames", video, "--mask", mask,
                               "--out", out, "--overlay", tmp_path / "overlay.mp4"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == FRAMES
    capture = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    capture.release()


@pytest.mark.parametrize("student", [TRAINED, VARIANT])
def test_task_level_parity_of_the_exported_backends(exports, clip_root, tmp_path, student):
    """ONNX Runtime, TFLite fp32 and LiteRT's GPU accelerator against PyTorch on the same
    clip: J&F >= 0.99, for the shipped trained student and the seeded one. TFLite fp16 is
    reported, not asserted."""
    folder = exports(student, 2).folder
    frames, mask, _ = _paths(clip_root)
    outs = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32"), ("tflite", "fp32"),
                               ("tflite", "fp16"), ("tflite-gpu", "fp32")):
        engine = open_backend(model=folder, ckpt=None, backend=backend, precision=precision,
                              queue=None, size=None)
        outs[backend, precision] = tmp_path / f"{backend}_{precision}" / "synth"
        run_video(engine, frames, mask, outs[backend, precision])
    reference = outs["torch", "fp32"].parent
    for key in (("onnx", "fp32"), ("tflite", "fp32"), ("tflite-gpu", "fp32")):
        jf = evaluate(outs[key].parent, reference).summary.jf
        assert jf >= 0.99, (key, jf)
    record = json.loads((outs["tflite-gpu", "fp32"] / "run.json").read_text())
    assert record["backend"] == "tflite-gpu" and "Vulkan" in record["device"]
    fp16 = evaluate(outs["tflite", "fp16"].parent, reference).summary.jf
    print(f"TFLite fp16 vs PyTorch J&F {fp16:.4f}")
    assert 0.0 <= fp16 <= 1.0
    # and the comparison can fail: a result scored against the wrong object order
    swapped = tmp_path / "swapped" / "synth"
    swapped.mkdir(parents=True)
    for p in outs["torch", "fp32"].glob("*.png"):
        ids = read_mask(p)
        write_mask(swapped / p.name, np.where(ids == 1, 2, np.where(ids == 2, 1, ids)))
    assert evaluate(swapped.parent, reference).summary.jf < 0.5


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """One clip of each mvos-synth training kind, from seeds the default student never saw
    (its training used 0-299, validation 50000-50003, the test set 100000-100007)."""
    root = tmp_path_factory.mktemp("held_out")
    write_davis_clip(scene_clip(12, 240, 427, seed=300123), root, "scene")
    write_davis_clip(shapes_clip(12, 240, 427, seed=300123), root, "shapes")
    return root


def test_the_trained_student_tracks_and_the_seeded_one_does_not(trained, held_out):
    """The default student's bar, on two held-out clips at 240x432 (the test set in
    docs/TRAINING.md is 16 clips at 480x864): J&F at least 0.2 above copying the first
    mask. The seeded student, the negative control, falls short of it."""
    baseline = evaluate(None, held_out / "Annotations" / "480p").summary.jf
    scores = {name: validate(chosen.student, held_out, (240, 432)).jf
              for name, chosen in (("trained", trained),
                                   ("seeded", student_for("seeded", None)))}
    print(f"held-out J&F: trained {scores['trained']:.3f}, seeded {scores['seeded']:.3f}, "
          f"copy-first {baseline:.3f}")
    assert scores["trained"] >= baseline + 0.2
    assert scores["seeded"] < baseline + 0.2


def test_copy_first_mask_baseline_equals_scoring_written_copies(clip_root, tmp_path):
    """--baseline copy-first scores the first annotation repeated (void as background):
    the same figures as those copies written out and scored as results; below a perfect
    tracker on a clip where the objects move."""
    _, _, annotations = _paths(clip_root)
    copies = tmp_path / "copies" / "synth"
    copies.mkdir(parents=True)
    first = read_mask(annotations / "synth" / "00000.png")
    for p in (annotations / "synth").glob("*.png"):
        write_mask(copies / p.name, np.where(first == 255, 0, first))
    written = evaluate(copies.parent, annotations)
    baseline = evaluate(None, annotations)
    assert baseline.global_row() == written.global_row()
    assert baseline.summary.jf < evaluate(annotations, annotations).summary.jf == 1.0
    result = _invoke(eval_cli, ["--baseline", "copy-first", "--annotations", annotations])
    assert result.exit_code == 0 and f"{baseline.summary.jf:.3f}" in result.output
    both = CliRunner().invoke(eval_cli.main, ["--baseline", "copy-first", "--results",
                                              str(copies), "--annotations", str(annotations)])
    assert both.exit_code == 2 and "exactly one of --results and --baseline" in both.output


def test_eval_cli_writes_the_official_csv_columns(clip_root, tmp_path):
    _, _, annotations = _paths(clip_root)
    csv_dir = tmp_path / "csv"
    result = _invoke(eval_cli, ["--results", annotations, "--annotations", annotations,
                                "--csv", csv_dir])
    assert result.exit_code == 0, result.output
    lines = (csv_dir / "global_results.csv").read_text().splitlines()
    assert lines == ["J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay",
                     "1.000,1.000,1.000,0.000,1.000,1.000,0.000"]
    per_seq = (csv_dir / "per-sequence_results.csv").read_text().splitlines()
    assert per_seq == ["Sequence,J-Mean,F-Mean", "synth_1,1.000,1.000", "synth_2,1.000,1.000"]


def _write_png(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mask(path, ids)


def test_bad_inputs_exit_2_with_the_file_named_and_nothing_written(clip_root, tmp_path):
    frames, mask, annotations = _paths(clip_root)
    out = tmp_path / "out"

    def run(*args):
        return _invoke(run_cli, ["--backend", "torch", "--out", out, *args])

    small = tmp_path / "small.png"
    _write_png(small, np.ones((30, 45), np.uint8))
    no_ids = tmp_path / "no_ids.png"
    _write_png(no_ids, np.full((SRC_H, SRC_W), 255, np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    cases = [
        (run("--frames", frames, "--mask", small), "small.png is 30x45"),
        (run("--frames", frames, "--mask", tmp_path / "none.png"), "none.png: mask not found"),
        (run("--frames", empty, "--mask", mask), "no .jpg/.jpeg/.png frames"),
        (run("--frames", broken, "--mask", mask), "broken.mp4: OpenCV cannot read"),
        (run("--frames", frames, "--mask", no_ids), "no object ids"),
        (run("--frames", frames, "--mask", mask, "--model", empty, "--backend", "tflite"),
         "no manifest.json"),
        (run("--frames", frames, "--mask", mask, "--backend", "onnx"), "--model"),
    ]
    for result, message in cases:
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output
        assert not out.exists() and not list(tmp_path.glob(".out.*"))

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("user data")
    refused = _invoke(run_cli, ["--backend", "torch", "--frames", frames, "--mask", mask,
                                "--out", taken])
    assert refused.exit_code == 2 and "not written by mvos-run" in refused.output
    assert (taken / "keep.txt").read_text() == "user data"

    results = tmp_path / "results" / "synth"
    for p in sorted(annotations.joinpath("synth").glob("*.png"))[:-1]:  # last frame missing
        _write_png(results / p.name, read_mask(p))
    missing = _invoke(eval_cli, ["--results", results.parent, "--annotations", annotations])
    assert missing.exit_code == 2 and f"{FRAMES - 1:05d}.png: result frame missing" in \
        missing.output
    both = _invoke(eval_cli, ["--results", results.parent])
    assert both.exit_code == 2 and "exactly one of" in both.output
