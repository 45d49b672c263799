"""Frames and masks as users have them: every image mode, EXIF orientation, frame names
without zero padding, lossy masks, and objects too small for the model's size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mobilevos_deploy.data.media import open_frames, read_mask, write_mask
from mobilevos_deploy.errors import UserError
from mobilevos_deploy.metrics.evaluate import evaluate

H, W = 24, 40


def _ids() -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[4:14, 6:20] = 1
    return ids


def test_a_1_bit_or_0_255_greyscale_mask_is_one_object_not_void(tmp_path):
    """A binary mask saved as 1-bit or as greyscale 0/255 holds object 1 (255 is void only
    in the DAVIS indexed convention, where it is a palette index)."""
    ids = _ids()
    Image.fromarray(ids.astype(bool)).save(tmp_path / "bit.png")
    Image.fromarray(ids * 255, mode="L").save(tmp_path / "grey.png")
    for name in ("bit.png", "grey.png"):
        got = read_mask(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, ids), name
    write_mask(tmp_path / "davis.png", np.where(ids == 1, 255, 0))  # indexed: 255 is void
    assert set(np.unique(read_mask(tmp_path / "davis.png"))) == {0, 255}


def test_results_saved_as_1_bit_pngs_score_as_their_masks(tmp_path):
    """The results of a correct run, saved as 1-bit PNGs, score J&F 1 against annotations
    holding the same masks."""
    truth, results = tmp_path / "truth" / "seq", tmp_path / "results" / "seq"
    truth.mkdir(parents=True)
    results.mkdir(parents=True)
    for t in range(4):
        ids = np.roll(_ids(), t, axis=1)
        write_mask(truth / f"{t:05d}.png", ids)
        Image.fromarray(ids.astype(bool)).save(results / f"{t:05d}.png")
    summary = evaluate(tmp_path / "results", tmp_path / "truth").summary
    assert summary.jf == pytest.approx(1.0)


def test_a_jpeg_mask_is_refused(tmp_path):
    """A 0/255 mask saved as JPEG: its compression noise would become object ids."""
    Image.fromarray(_ids() * 255, mode="L").save(tmp_path / "first.jpg", quality=90)
    noisy = np.asarray(Image.open(tmp_path / "first.jpg"))
    assert len(np.unique(noisy)) > 2  # what would have been read as ids
    with pytest.raises(UserError, match="JPEG mask.*losslessly"):
        read_mask(tmp_path / "first.jpg")


def test_16_bit_greyscale_frames_keep_their_contrast(tmp_path):
    """A 16-bit greyscale PNG: its values scaled from 0..65535, not clipped to white."""
    ramp = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "00000.png")
    frames = list(open_frames(tmp_path))
    grey = frames[0][..., 0].astype(int)
    assert frames[0].shape == (H, W, 3)
    assert grey.min() == 0 and grey.max() == 255
    assert np.abs(grey - np.rint(ramp / 257.0)).max() <= 1  # 65535 / 255 = 257


def test_frames_are_read_as_viewers_show_them(tmp_path):
    """A JPEG frame with EXIF orientation 6 (rotate 90 degrees clockwise to view): the frame
    is read turned, at the size a viewer shows (W x H), so a mask drawn on it fits."""
    stored = np.zeros((H, W, 3), np.uint8)
    stored[:, : W // 2] = 255  # left half white as stored; the top half once turned
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "00000.jpg", exif=exif, quality=95)
    source = open_frames(tmp_path)
    frame = next(iter(source))
    assert (source.height, source.width) == (W, H) and frame.shape == (W, H, 3)
    assert frame[: W // 2 - 2].mean() > 200 and frame[W // 2 + 2 :].mean() < 50


def test_frame_order_follows_the_numbers_in_the_names(tmp_path):
    """0.jpg ... 11.jpg: 2 before 10 (text order put 10 and 11 after 1); hidden files such
    as macOS's ._ twins are not frames."""
    for t in range(12):
        Image.fromarray(np.full((H, W, 3), t * 20, np.uint8)).save(tmp_path / f"{t}.jpg")
    (tmp_path / "._3.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    source = open_frames(tmp_path)
    assert source.names == [str(t) for t in range(12)]
    means = [frame.mean() for frame in source]
    assert means == sorted(means)


def test_an_object_lost_at_the_models_size_is_refused(tmp_path):
    """A 3x3-pixel object in 512x768 frames vanishes from the first mask at a 32x48 model
    size (nearest neighbour): the run is refused, naming the object, instead of tracking
    nothing for it."""
    from mobilevos_deploy.inference.backends import TorchBackend
    from mobilevos_deploy.inference.segment import segment
    from mobilevos_deploy.model.config import get_variant
    from mobilevos_deploy.model.student import build_student

    first = np.zeros((512, 768), np.uint8)
    first[100:300, 100:400] = 1
    first[401:404, 601:604] = 2  # 9 px
    frames = [np.zeros((512, 768, 3), np.uint8)] * 2
    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0)
    backend = TorchBackend(student, 2, 32, 48)
    with pytest.raises(UserError, match=r"object\(s\) 2 \(9 px\) vanish .*larger --size"):
        segment(backend, frames, first, lambda *a: None)


def test_a_mask_of_the_unturned_frame_is_refused_naming_the_orientation(tmp_path):
    """Frames with EXIF orientation 6 and a mask drawn at the stored (unturned) size: the
    refusal says how frames are read."""
    from mobilevos_deploy.inference.backends import TorchBackend
    from mobilevos_deploy.inference.runner import run_video
    from mobilevos_deploy.model.config import get_variant
    from mobilevos_deploy.model.student import build_student

    frames = tmp_path / "frames"
    frames.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(frames / "00000.jpg", exif=exif)
    write_mask(tmp_path / "first.png", _ids())  # H x W: the stored pixels, not the view
    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0)
    with pytest.raises(UserError, match="EXIF orientation"):
        run_video(TorchBackend(student, 2, 32, 48), frames, tmp_path / "first.png",
                  tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _clip(folder, frames: int = 3) -> tuple:
    folder.mkdir()
    for t in range(frames):
        Image.fromarray(np.full((32, 48, 3), 40 * t, np.uint8)).save(folder / f"{t:05d}.png")
    first = np.zeros((32, 48), np.uint8)
    first[8:24, 10:30] = 1
    write_mask(folder.parent / "first.png", first)
    return folder, folder.parent / "first.png"


def test_a_run_through_a_symlinked_out_replaces_the_folder_it_points_to(tmp_path):
    """--out a symlink to an earlier run: the run replaces the folder behind it and the
    link stays (rmtree used to refuse the link after the whole run)."""
    from mobilevos_deploy.inference.backends import TorchBackend
    from mobilevos_deploy.inference.runner import run_video
    from mobilevos_deploy.model.config import get_variant
    from mobilevos_deploy.model.student import build_student

    frames, mask = _clip(tmp_path / "frames")
    backend = TorchBackend(build_student(get_variant("mobilenetv2-noaspp").config, seed=0),
                           2, 32, 48)
    real = tmp_path / "runs" / "a"
    run_video(backend, frames, mask, real)
    (real / "00001.png").unlink()  # so the rerun's files are seen to arrive
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    result = run_video(backend, frames, mask, link)
    assert link.is_symlink() and result.out == real.resolve()
    assert sorted(p.name for p in real.iterdir()) == ["00000.png", "00001.png", "00002.png",
                                                      "run.json"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]


def test_replacing_a_folder_never_loses_both(tmp_path, monkeypatch):
    """An output folder is swapped for its new version in one step where the system can;
    where it cannot, and the second move fails (a signal, a full disk), the earlier folder
    is put back."""
    from mobilevos_deploy import files

    def pair():
        for name, text in (("out", "old"), ("staging", "new")):
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / "f").write_text(text)

    pair()
    files.replace_dir(tmp_path / "staging", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    pair()
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    real, calls = files.os.replace, []

    def interrupted(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the new folder's move
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.replace_dir(tmp_path / "staging", tmp_path / "out")
    monkeypatch.setattr(files.os, "replace", real)
    assert (tmp_path / "out" / "f").read_text() == "old"
    assert (tmp_path / "staging" / "f").read_text() == "new"


def test_an_overlay_is_never_written_over_a_users_image(tmp_path):
    """--overlay naming an image the user has: refused, untouched. The same run again
    replaces its own overlay (its run.json names the file and its sha256)."""
    from mobilevos_deploy.inference.backends import TorchBackend
    from mobilevos_deploy.inference.runner import run_video
    from mobilevos_deploy.model.config import get_variant
    from mobilevos_deploy.model.student import build_student

    frames, mask = _clip(tmp_path / "frames")
    backend = TorchBackend(build_student(get_variant("mobilenetv2-noaspp").config, seed=0),
                           2, 32, 48)
    photo = tmp_path / "holiday.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(photo)
    before = photo.read_bytes()
    with pytest.raises(UserError, match="refusing to overwrite it"):
        run_video(backend, frames, mask, tmp_path / "out", photo)
    assert photo.read_bytes() == before and not (tmp_path / "out").exists()
    sheet = tmp_path / "sheet.png"
    for _ in range(2):
        run_video(backend, frames, mask, tmp_path / "out", sheet)
        assert sheet.is_file()
