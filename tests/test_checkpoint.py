"""Checkpoint round trip and every bad-input message, through the library and the CLI."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from mobilevos_deploy.cli.track import main as track_cli
from mobilevos_deploy.data.synthetic import moving_object_clip
from mobilevos_deploy.errors import CheckpointError, UserError
from mobilevos_deploy.inference.tracker import track
from mobilevos_deploy.model import checkpoint
from mobilevos_deploy.model.checkpoint import (
    DEFAULT_CHECKPOINT,
    DEFAULT_NAME,
    MODELS,
    SEEDED,
    load_checkpoint,
    save_checkpoint,
    student_for,
)
from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.student import build_student

NAME = "mobilenetv2-noaspp"


def run_cli(*args: str):
    return CliRunner().invoke(track_cli, ["--size", "32x48", "--frames", "2", *args])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    student = build_student(get_variant(NAME).config, seed=7)
    save_checkpoint(path, student, NAME)
    return path, student


def test_round_trip_gives_identical_weights_and_masks(saved):
    path, student = saved
    loaded = load_checkpoint(path)
    assert loaded.variant == NAME and loaded.config == student.config
    for (k, a), (k2, b) in zip(student.state_dict().items(), loaded.student.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    clip = moving_object_clip(3, 32, 48)
    torch.testing.assert_close(track(loaded.student, clip.frames, clip.masks[0], 2),
                               track(student, clip.frames, clip.masks[0], 2), atol=0, rtol=0)
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_bare_state_dict_needs_and_accepts_variant(saved, tmp_path):
    _, student = saved
    bare = tmp_path / "bare.pt"
    torch.save(student.state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare state_dict.*--variant"):
        load_checkpoint(bare)
    assert load_checkpoint(bare, NAME).variant == NAME


def test_failed_save_leaves_no_file(tmp_path):
    class Broken(torch.nn.Module):
        config = get_variant(NAME).config

        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "x.pt", Broken(), NAME)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def _bad_files(saved, tmp_path):
    path, student = saved
    state = student.state_dict()
    files = {}

    files["missing"] = (tmp_path / "nope.pt", "checkpoint not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00this is not a checkpoint" * 10)
    files["junk"] = (junk, "not a readable PyTorch checkpoint")
    text = tmp_path / "text.pt"
    text.write_bytes(b"abc" * 100)  # makes torch's legacy unpickler raise IndexError
    files["text"] = (text, "not a readable PyTorch checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    files["truncated"] = (truncated, "not a readable PyTorch checkpoint")
    pickled = tmp_path / "module.pt"
    torch.save(student, pickled)
    files["pickled"] = (pickled, "pickled Python objects .*Student.* refused because loading")
    no_sd = tmp_path / "nosd.pt"
    torch.save({"model": 1, "epoch": 3}, no_sd)
    files["no_state_dict"] = (no_sd, "no 'state_dict'")
    fewer = dict(list(state.items())[3:])
    fewer["extra.weight"] = torch.zeros(1)
    keys = tmp_path / "keys.pt"
    torch.save({"variant": NAME, "config": student.config.to_dict(), "state_dict": fewer}, keys)
    files["keys"] = (keys, "3 missing keys .*1 unexpected keys \\(extra.weight\\)")
    reshaped = dict(state)
    name = "decoder.pred.weight"
    reshaped[name] = torch.zeros(2, *state[name].shape[1:])
    shapes = tmp_path / "shapes.pt"
    cfg = student.config.to_dict()
    torch.save({"variant": NAME, "config": cfg, "state_dict": reshaped}, shapes)
    files["shapes"] = (shapes, f"1 shape mismatches \\({name}: expected \\(1, 32, 3, 3\\), "
                              "got \\(2, 32, 3, 3\\)")
    nonfinite = dict(state)
    nonfinite["decoder.pred.weight"] = state["decoder.pred.weight"].clone()
    nonfinite["decoder.pred.weight"][0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])
    nans = tmp_path / "nan.pt"
    torch.save({"variant": NAME, "config": cfg, "state_dict": nonfinite}, nans)
    files["nonfinite"] = (nans, "non-finite weights in 1 tensors: decoder.pred.weight "
                                r"\(1 NaN, 1 inf\)")
    return files


BAD = ["missing", "junk", "text", "truncated", "pickled", "no_state_dict", "keys", "shapes",
       "nonfinite"]


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_messages(saved, tmp_path, case):
    path, pattern = _bad_files(saved, tmp_path)[case]
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("case", BAD)
def test_cli_bad_checkpoint_exits_2_without_traceback(saved, tmp_path, case):
    path, _ = _bad_files(saved, tmp_path)[case]
    result = run_cli("--ckpt", str(path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_unknown_variant_and_variant_mismatch(saved):
    path, _ = saved
    with pytest.raises(UserError, match="unknown variant 'resnet50'; choose one of"):
        load_checkpoint(path, "resnet50")
    with pytest.raises(CheckpointError, match="is a 'mobilenetv2-noaspp' checkpoint but "
                                              "--variant resnet18"):
        load_checkpoint(path, "resnet18")
    for variant in ("resnet50", "resnet18"):
        result = run_cli("--ckpt", str(path), "--variant", variant)
        assert result.exit_code == 2 and result.output.startswith("error: ")


def test_cli_runs_a_good_checkpoint(saved):
    path, _ = saved
    result = run_cli("--ckpt", str(path), "--frames", "3")
    assert result.exit_code == 0, result.output
    assert f"variant {NAME} (checkpoint" in result.output


# --- the shipped trained default student ------------------------------------------------------

def test_default_is_the_shipped_checkpoint_and_seeded_is_asked_for_by_name(trained):
    assert trained.checkpoint == DEFAULT_CHECKPOINT and trained.name == DEFAULT_NAME
    shipped = load_checkpoint(DEFAULT_CHECKPOINT).student.state_dict()
    for key, value in trained.student.state_dict().items():
        assert torch.equal(value, shipped[key]), key
    assert student_for(None, NAME).checkpoint == DEFAULT_CHECKPOINT  # its variant, named
    seeded = student_for(SEEDED, None)
    assert not seeded.trained and seeded.variant == NAME and seeded.checkpoint is None
    reference = build_student(get_variant(NAME).config, seed=0).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in seeded.student.state_dict().items())
    assert not torch.equal(shipped["decoder.pred.weight"], reference["decoder.pred.weight"])
    other = student_for(None, "resnet18")  # other variants stay seeded, labelled untrained
    assert not other.trained and other.label() == "UNTRAINED seeded student"


def test_track_cli_names_the_student_it_ran():
    default = run_cli()
    assert default.exit_code == 0 and DEFAULT_NAME in default.output, default.output
    assert "not a quality figure" not in default.output
    seeded = run_cli("--ckpt", SEEDED)
    assert seeded.exit_code == 0 and "UNTRAINED seeded student" in seeded.output
    assert "not a quality figure" in seeded.output


def test_a_missing_default_checkpoint_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match=f"--ckpt {SEEDED} for the seeded"):
        student_for(None, None)
    result = run_cli()
    assert result.exit_code == 2 and "gone.pt" in result.output
    assert student_for(SEEDED, None).trained is False  # the seeded student needs no file


def test_model_card_names_the_shipped_file_by_its_hash():
    from mobilevos_deploy.files import sha256

    card = (MODELS / f"{DEFAULT_NAME}.md").read_text()
    assert sha256(DEFAULT_CHECKPOINT) in card
    assert DEFAULT_CHECKPOINT.stat().st_size <= 10 * 2**20
    assert "not a model for real videos" in card
