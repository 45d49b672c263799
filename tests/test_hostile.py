"""The hostile-input battery: nothing a user had is lost, no artifact that is
not what its manifest says is run, and a user's mistake gets a message, exit 2, and no
traceback. Each case here failed on the code before it (files deleted, exit 0 on a
corrupt graph, raw tracebacks, staging folders and orphan workers after SIGTERM)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mobilevos_deploy.bench.results import FIELDS, BenchRow, ResultStore
from mobilevos_deploy.cli import bench as bench_cli
from mobilevos_deploy.cli import eval as eval_cli
from mobilevos_deploy.cli import run as run_cli
from mobilevos_deploy.cli import soup as soup_cli
from mobilevos_deploy.cli import synth as synth_cli
from mobilevos_deploy.cli import train as train_cli
from mobilevos_deploy.data.media import read_mask, write_mask
from mobilevos_deploy.data.synthetic import moving_object_clip, write_davis_clip
from mobilevos_deploy.errors import CheckpointError, UserError
from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.export.artifact.folder import check_replaceable
from mobilevos_deploy.export.gates.parity import rollout_gate, step_parity
from mobilevos_deploy.inference.backends import open_backend
from mobilevos_deploy.inference.segment import segment
from mobilevos_deploy.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.student import build_student

from .conftest import TRAINED, seeded

VARIANT = "mobilenetv2-noaspp"
BIN = Path(sys.executable).parent


def invoke(cli, *args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: what "untouched" is checked against."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clip")
    write_davis_clip(moving_object_clip(6, 48, 72, seed=3), root, "c")
    return root


@pytest.fixture
def export_copy(exports, tmp_path) -> Path:
    """A private copy of the trained student's small export, free to be damaged."""
    folder = tmp_path / "export"
    shutil.copytree(exports(TRAINED, 2).folder, folder)
    return folder


# --- 1. user files are never destroyed -------------------------------------------------------

def test_export_refuses_a_folder_that_merely_holds_a_manifest_json(students, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "own manifest"}')
    (mine / "thesis.tex").write_text("years of work")
    before = tree(mine)
    with pytest.raises(UserError, match="not an export folder"):
        export_model(seeded(students[VARIANT], VARIANT), 1, 32, 48, mine, objects=False)
    assert tree(mine) == before


def test_export_refuses_an_export_folder_holding_a_users_file(export_copy):
    (export_copy / "notes.txt").write_text("keep")
    before = tree(export_copy)
    with pytest.raises(UserError, match="notes.txt"):
        check_replaceable(export_copy)
    assert tree(export_copy) == before
    (export_copy / "notes.txt").unlink()
    check_replaceable(export_copy)  # an export of ours, as written, may be replaced


def test_an_export_made_by_an_older_version_is_still_ours_to_replace(export_copy):
    _edit_manifest(export_copy, lambda m: {k: v for k, v in m.items()
                                           if k != "graph_revision"})
    with pytest.raises(UserError, match="older version"):
        open_backend(model=export_copy, ckpt=None, backend="onnx", precision="fp32",
                     queue=None, size=None)
    check_replaceable(export_copy)  # no error: it can be exported over


def test_an_ignored_signal_stays_ignored():
    """nohup mvos-train ... & must survive a closed terminal."""
    from mobilevos_deploy.cli import user_errors

    seen = []
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        user_errors(lambda: seen.append(signal.getsignal(signal.SIGHUP)))()
        assert seen == [signal.SIG_IGN]
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        user_errors(lambda: seen.append(signal.getsignal(signal.SIGHUP)))()
        assert seen[1] not in (signal.SIG_IGN, signal.SIG_DFL)  # handled while it ran
    finally:
        signal.signal(signal.SIGHUP, before)


def _row(**change) -> BenchRow:
    values = {f: None for f in FIELDS}
    values.update(variant=VARIANT, queue=2, size="32x48", precision="fp16", engine="tflite",
                  delegate="xnnpack", threads=2, device="host", device_model="", soc="",
                  android="", runs=3, delegation="cpu", tools="{}", manifest_sha256="x",
                  timestamp="t", mean_ms=1.5, log_file="", gpu_device="", graph="step")
    values.update(change)
    return BenchRow(**values)


def test_bench_refuses_a_results_csv_that_is_not_ours(tmp_path):
    theirs = tmp_path / "sales.csv"
    theirs.write_text("region,revenue\nnorth,12\nsouth,7\n")
    before = theirs.read_bytes()
    with pytest.raises(UserError, match="not a mvos-bench results file"):
        ResultStore(theirs)
    result = invoke(bench_cli, "--results", theirs, "--size", "32x48", "--engines", "onnx",
                    "--exports", tmp_path / "exports")
    assert result.exit_code == 2 and "sales.csv" in result.output
    assert theirs.read_bytes() == before and not (tmp_path / "exports").exists()


def test_bench_unreadable_json_twin_is_a_message(tmp_path):
    (tmp_path / "r.json").write_text("{ not json")
    with pytest.raises(UserError, match="r.json is not a mvos-bench results file"):
        ResultStore(tmp_path / "r.csv")


def test_bench_keeps_the_rows_of_a_csv_whose_json_twin_is_gone(tmp_path):
    store = ResultStore(tmp_path / "r.csv")
    store.add(_row(queue=1))
    store.add(_row(queue=2, threads=None, mean_ms=None))
    (tmp_path / "r.json").unlink()
    again = ResultStore(tmp_path / "r.csv")
    assert [r.key() for r in again.rows] == [r.key() for r in store.rows]
    assert again.rows[1].threads is None and again.rows[0].mean_ms == 1.5


def test_synth_never_mixes_sizes_in_a_sequence(tmp_path):
    first = invoke(synth_cli, "--out", tmp_path, "--frames", "4", "--size", "32x48")
    assert first.exit_code == 0, first.output
    before = tree(tmp_path)
    again = invoke(synth_cli, "--out", tmp_path, "--frames", "3", "--size", "40x60")
    assert again.exit_code == 2 and "already holds" in again.output
    assert tree(tmp_path) == before
    replaced = invoke(synth_cli, "--out", tmp_path, "--frames", "3", "--size", "40x60",
                      "--replace")
    assert replaced.exit_code == 0, replaced.output
    masks = sorted((tmp_path / "Annotations/480p/synth").glob("*.png"))
    assert len(masks) == 3 and {read_mask(m).shape for m in masks} == {(40, 60)}
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".mvos-*"))


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../x"])
def test_synth_name_is_a_folder_name_never_a_path(tmp_path, name):
    invoke(synth_cli, "--out", tmp_path, "--frames", "3", "--size", "32x48", "--name", "bear")
    before = tree(tmp_path)
    result = invoke(synth_cli, "--out", tmp_path, "--frames", "3", "--size", "32x48",
                    "--name", name, "--replace")
    assert result.exit_code == 2 and "a sequence name is" in result.output
    assert tree(tmp_path) == before


def test_run_out_with_a_users_file_beside_an_earlier_run_is_refused(clip, tmp_path):
    frames, mask = clip / "JPEGImages/480p/c", clip / "Annotations/480p/c/00000.png"
    out = tmp_path / "out"
    ok = invoke(run_cli, "--backend", "torch", "--frames", frames, "--mask", mask, "--out", out,
                "--size", "32x48")
    assert ok.exit_code == 0, ok.output
    (out / "notes.txt").write_text("mine")
    again = invoke(run_cli, "--backend", "torch", "--frames", frames, "--mask", mask,
                   "--out", out, "--size", "32x48")
    assert again.exit_code == 2 and "notes.txt" in again.output
    assert (out / "notes.txt").read_text() == "mine"


# --- 2. an export is what its manifest says, or it is not run ---------------------------------

def _edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(change(manifest)))


def _flip(path: Path, count: int = 4000) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "backends", "message"), [
    (lambda f: _flip(f / "model_fp32.tflite"), ["tflite"], "does not match the sha256"),
    (lambda f: (f / "init.onnx").write_bytes((f / "init.onnx").read_bytes()[:999]),
     ["onnx"], "has 999 bytes, its manifest says"),
    (lambda f: (f / "model_fp16.tflite").unlink(), ["tflite-fp16"],
     "model_fp16.tflite is missing"),
    (lambda f: (f / "step.onnx").write_text("garbage"), ["onnx"], "bytes, its manifest says"),
    (lambda f: _edit_manifest(f, lambda m: {**m, "queue": 5}),
     ["torch", "onnx", "tflite"], "declared inputs and outputs are not those of queue 5"),
    (lambda f: _edit_manifest(f, lambda m: {**m, "size": [96, 128]}),
     ["torch", "onnx", "tflite"], "not those of queue 2 at 96x128"),
    (lambda f: _edit_manifest(f, lambda m: {}), ["torch", "tflite"], "no 'schema'"),
    (lambda f: _edit_manifest(f, lambda m: {**m, "queue": "2"}), ["onnx"], "'queue' is a str"),
    (lambda f: (f / "manifest.json").write_text("{\"schema\": 1,"), ["onnx"],
     "unreadable manifest"),
])
def test_run_refuses_an_export_that_is_not_what_its_manifest_says(export_copy, damage,
                                                                    backends, message):
    damage(export_copy)
    for backend in backends:
        name, _, precision = backend.partition("-fp")
        with pytest.raises(UserError, match=message):
            open_backend(model=export_copy, ckpt=None, backend=name,
                         precision=f"fp{precision}" if precision else "fp32", queue=None,
                         size=None)


def test_run_cli_on_a_corrupt_graph_exits_2_and_writes_nothing(export_copy, clip, tmp_path):
    _flip(export_copy / "model_fp32.tflite")
    out = tmp_path / "out"
    result = invoke(run_cli, "--model", export_copy, "--backend", "tflite", "--frames",
                    clip / "JPEGImages/480p/c", "--mask", clip / "Annotations/480p/c/00000.png",
                    "--out", out)
    assert result.exit_code == 2 and "export it again" in result.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_torch_backend_refuses_a_checkpoint_changed_since_the_export(export_copy, tmp_path):
    ckpt = tmp_path / "student.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, ckpt)
    _edit_manifest(export_copy, lambda m: {**m, "checkpoint": {**m["checkpoint"],
                                                               "path": str(ckpt)}})
    open_backend(model=export_copy, ckpt=None, backend="torch", precision="fp32", queue=None,
                 size=None)  # the same bytes: accepted
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():
        next(loaded.student.parameters()).add_(1e-3)
    save_checkpoint(ckpt, loaded.student, loaded.variant)
    with pytest.raises(UserError, match="has changed since"):
        open_backend(model=export_copy, ckpt=None, backend="torch", precision="fp32",
                     queue=None, size=None)
    ckpt.unlink()
    with pytest.raises(UserError, match="is missing"):
        open_backend(model=export_copy, ckpt=None, backend="torch", precision="fp32",
                     queue=None, size=None)


def test_bench_refuses_a_reused_export_with_a_changed_file(exports, tmp_path):
    from mobilevos_deploy.bench.api import ensure_export

    folder = tmp_path / "exports" / f"{VARIANT}_q2_64x96"
    shutil.copytree(exports(TRAINED, 2).folder, folder)
    reused = ensure_export(VARIANT, 2, (64, 96), None, tmp_path / "exports")[1]
    assert reused == json.loads((folder / "manifest.json").read_text())  # not made again
    _flip(folder / "model_fp16.tflite")
    with pytest.raises(UserError, match="model_fp16.tflite does not match the sha256"):
        ensure_export(VARIANT, 2, (64, 96), None, tmp_path / "exports")


# --- 3. non-finite numbers are named, never turned into empty masks ---------------------------

class _NanBackend:
    name, height, width, queue, precision, device = "tflite", 32, 48, 2, "fp32", "cpu"

    def init(self, frame, masks):
        return [() for _ in masks]

    def step(self, frame, states):
        return [np.full((32, 48), np.nan, np.float32) for _ in states], states


def test_segment_refuses_non_finite_probabilities():
    frames = [np.zeros((32, 48, 3), np.uint8)] * 3
    first = np.zeros((32, 48), np.uint8)
    first[8:16, 8:16] = 1
    with pytest.raises(UserError, match="frame 1: the tflite backend returned 1536 non-finite"):
        segment(_NanBackend(), frames, first, lambda *a: None)


def test_gates_name_a_non_finite_reference():
    ref = np.full((3, 4, 4), 0.9, np.float32)
    ref[1:, 0, 0] = np.nan
    gate = rollout_gate("rollout_x", ref, np.full((3, 4, 4), 0.9, np.float32), 0.99, None)
    assert not gate.passed and "reference's probabilities are non-finite" in gate.offending[0]
    from mobilevos_deploy.model.graphs import GraphSpec
    from mobilevos_deploy.model.stages import TensorSpec

    spec = GraphSpec("g", (TensorSpec("x", (1,), "float32", "x"),),
                     (TensorSpec("prob", (2,), "float32", "x"),))
    gate = step_parity(spec, lambda _: {"prob": np.array([np.nan, 1.0])},
                       {"onnx": lambda _: {"prob": np.array([0.0, 1.0])}}, {})
    assert not gate.passed and "the reference itself is non-finite: 1 NaN" in gate.offending[0]


def test_soup_refuses_a_nan_checkpoint_before_scoring(tmp_path, clip):
    student = build_student(get_variant(VARIANT).config, seed=0)
    save_checkpoint(tmp_path / "a.pt", student, VARIANT)
    with torch.no_grad():
        next(student.parameters())[0].fill_(float("nan"))
    save_checkpoint(tmp_path / "b.pt", student, VARIANT)
    result = invoke(soup_cli, tmp_path / "a.pt", tmp_path / "b.pt", "--val", clip,
                    "--out", tmp_path / "soup.pt", "--size", "32x48")
    assert result.exit_code == 2 and "non-finite weights" in result.output
    assert not (tmp_path / "soup.pt").exists()
    again = invoke(soup_cli, tmp_path / "a.pt", tmp_path / "a.pt", "--val", clip,
                   "--out", tmp_path / "a.pt", "--size", "32x48")
    assert again.exit_code == 2 and "one of the checkpoints to mix" in again.output


# --- 4. sizes beyond the machine are refused before anything is built --------------------------

def test_export_refuses_a_size_that_cannot_fit_before_building(students, tmp_path):
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"needs at least [\d,.]+ GiB"):
        export_model(seeded(students[VARIANT], VARIANT), 2, 16000, 16000, tmp_path / "x")
    assert time.perf_counter() - start < 10 and list(tmp_path.iterdir()) == []


def test_info_counts_a_huge_size_without_allocating_it():
    code = ("import resource; from mobilevos_deploy.model.profile import profile_variant; "
            "p = profile_variant('resnet18', 16000, 16000, 2); "
            "print(p.macs['total'], p.export_floor_bytes, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    macs, floor, peak_kb = (int(v) for v in out.stdout.split())
    assert macs > 1e14 and floor > 2**40
    assert peak_kb < 1_500_000, f"peak memory {peak_kb / 1024:.0f} MB"  # torch itself ~0.5 GB


# --- 5. SIGTERM cleans up like Ctrl-C; workers die with their parent --------------------------

def _children(pid: int) -> list[int]:
    """The converter workers (tf_worker) among ``pid``'s children."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(c) for c in text.split()]
    workers = []
    for child in found:
        try:
            if b"tf_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except OSError:
            continue
    return workers


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _default_signals() -> None:
    """In the child: SIGTERM and SIGHUP as a fresh shell has them (a nohup-ed pytest would
    hand down an ignored SIGHUP, which the commands rightly keep ignoring)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _start_export(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out" / "e"
    proc = subprocess.Popen([str(BIN / "mvos-export"), "--ckpt", "seeded", "--size", "32x48",
                             "--queue", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_signals)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the converter worker runs in a staging folder
        if list(out.parent.glob(".staging-*/.work/jobs*.json")) and _children(proc.pid):
            return proc, out
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the export never started converting")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_during_export_leaves_no_staging_folder_and_no_worker(tmp_path):
    proc, out = _start_export(tmp_path)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGTERM, output  # died by the signal, after clean-up
    assert "Traceback" not in output and "stopped by SIGTERM" in output
    assert list(out.parent.iterdir()) == []
    time.sleep(1)
    assert not [w for w in workers if _alive(w)]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_export_takes_its_worker_with_it(tmp_path):
    proc, _ = _start_export(tmp_path)
    workers = _children(proc.pid)
    proc.kill()  # SIGKILL: no clean-up can run; the kernel stops the worker
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while [w for w in workers if _alive(w)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_run_removes_the_staging_folder_and_partial_video(tmp_path, signum):
    long_clip = tmp_path / "clip"
    write_davis_clip(moving_object_clip(400, 48, 72, seed=1), long_clip, "c")
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    proc = subprocess.Popen([str(BIN / "mvos-run"), "--backend", "torch", "--frames",
                             str(long_clip / "JPEGImages/480p/c"), "--mask",
                             str(long_clip / "Annotations/480p/c/00000.png"), "--out", str(out),
                             "--size", "32x48", "--overlay", str(overlay)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_signals)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".overlay.partial.mp4")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signum, output
    assert "Traceback" not in output and f"stopped by {signum.name}" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"], output


# --- 6. an output that cannot be written is refused up front ------------------------------------

def test_unwritable_outputs_are_refused_before_any_work(tmp_path, clip):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    frames, mask = clip / "JPEGImages/480p/c", clip / "Annotations/480p/c/00000.png"
    cases = [
        (run_cli, ["--backend", "torch", "--frames", frames, "--mask", mask, "--out",
                   blocker / "o", "--size", "32x48"]),
        (eval_cli, ["--baseline", "copy-first", "--annotations", clip / "Annotations/480p",
                    "--csv", blocker]),
        (bench_cli, ["--results", blocker / "r.csv", "--size", "32x48", "--exports",
                     tmp_path / "e"]),
        (bench_cli, ["--results", tmp_path / "r.csv", "--plot", blocker / "p.png",
                     "--size", "32x48", "--exports", tmp_path / "e"]),
        (train_cli, ["--model", VARIANT, "--data", clip, "--out", blocker, "--iters", "1",
                     "--size", "32x32"]),
        (soup_cli, [DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT, "--val", clip, "--out",
                    blocker / "s.pt"]),
        (synth_cli, ["--out", blocker / "d"]),
    ]
    for cli, args in cases:
        result = invoke(cli, *args)
        assert result.exit_code == 2, (cli.__name__, result.output)
        assert "a_file" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# --- 7. smaller ones --------------------------------------------------------------------------

def test_files_we_write_follow_the_umask(tmp_path, clip):
    mask = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "c.pt", build_student(get_variant(VARIANT).config), VARIANT)
        result = invoke(run_cli, "--backend", "torch", "--frames", clip / "JPEGImages/480p/c",
                        "--mask", clip / "Annotations/480p/c/00000.png", "--out",
                        tmp_path / "o", "--size", "32x48")
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o750


def test_a_text_file_named_pt_is_said_to_be_text(tmp_path):
    (tmp_path / "notes.pt").write_text("hello, these are notes")
    with pytest.raises(CheckpointError, match="not a torch.save file: it begins with b'hello, t', "
                                              "text"):
        load_checkpoint(tmp_path / "notes.pt")


@pytest.mark.parametrize(("field", "value"), [("decoder_dims", [32]), ("key_dim", 64.0),
                                              ("decoder_dims", [0, 0, 0]),
                                              ("aspp_rates", "ab"), ("value_dim", 10**9)])
def test_a_bad_config_in_a_checkpoint_is_a_checkpoint_error(tmp_path, field, value):
    student = build_student(get_variant(VARIANT).config)
    config = {**student.config.to_dict(), field: value}
    torch.save({"variant": VARIANT, "config": config, "state_dict": student.state_dict()},
               tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(tmp_path / "c.pt")


def test_first_mask_without_objects_names_the_file(clip, tmp_path):
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros((48, 72), np.uint8))
    result = invoke(run_cli, "--backend", "torch", "--frames", clip / "JPEGImages/480p/c",
                    "--mask", empty, "--out", tmp_path / "o", "--size", "32x48")
    assert result.exit_code == 2 and "empty.png: the first mask holds no object ids" in \
        result.output


def test_eval_scores_a_run_whose_first_mask_has_void(clip, tmp_path):
    """mvos-run keeps frame 0's void (255) in its output; mvos-eval must accept it."""
    ann = tmp_path / "Annotations/480p"
    shutil.copytree(clip / "Annotations/480p", ann)
    first = read_mask(ann / "c/00000.png").copy()
    first[:2] = 255
    write_mask(ann / "c/00000.png", first)
    out = tmp_path / "res/c"
    ran = invoke(run_cli, "--backend", "torch", "--frames", clip / "JPEGImages/480p/c", "--mask",
                 ann / "c/00000.png", "--out", out, "--size", "32x48")
    assert ran.exit_code == 0, ran.output
    scored = invoke(eval_cli, "--results", tmp_path / "res", "--annotations", ann)
    assert scored.exit_code == 0, scored.output


def test_frames_sharing_a_name_are_refused(clip, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(clip / "JPEGImages/480p/c", frames)
    shutil.copyfile(clip / "Annotations/480p/c/00002.png", frames / "00002.png")
    result = invoke(run_cli, "--backend", "torch", "--frames", frames, "--mask",
                    clip / "Annotations/480p/c/00000.png", "--out", tmp_path / "o",
                    "--size", "32x48")
    assert result.exit_code == 2 and "00002.jpg, 00002.png share a name" in result.output


def test_nan_flags_are_refused(clip, tmp_path):
    for flag in ("--lr", "--tau", "--min-crop", "--omega"):
        result = invoke(train_cli, "--model", VARIANT, "--data", clip, "--out", tmp_path / "t",
                        "--iters", "1", flag, "nan")
        assert result.exit_code == 2 and "not a finite number" in result.output, flag
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("payload", [{"settings": {}}, [1, 2, 3]])
def test_resume_from_a_foreign_training_state_is_a_message(clip, tmp_path, payload):
    out = tmp_path / "run"
    out.mkdir()
    torch.save(payload, out / "train_state.pt")
    result = invoke(train_cli, "--model", VARIANT, "--data", clip, "--out", out, "--iters",
                    "1", "--size", "32x32", "--loss", "ce", "--resume", "--no-progress")
    assert result.exit_code == 2 and "is not a training state" in result.output, result.output


def test_bench_keeps_rows_merged_into_the_csv(tmp_path):
    """Rows a user merged into the CSV (from another machine) that its JSON twin lacks
    survive the next write."""
    store = ResultStore(tmp_path / "r.csv")
    store.add(_row(queue=1))
    with open(tmp_path / "r.csv", "a") as fh:  # another machine's row, pasted in
        text = (tmp_path / "r.csv").read_text().splitlines()[1].replace("host", "lab-2")
        fh.write(text + "\n")
    again = ResultStore(tmp_path / "r.csv")
    again.add(_row(queue=2))
    rows = ResultStore(tmp_path / "r.csv").rows
    assert sorted((r.device, r.queue) for r in rows) == [("host", 1), ("host", 2),
                                                         ("lab-2", 1)]


def _annotations(root: Path) -> Path:
    seq = root / "Annotations" / "480p" / "seq"
    seq.mkdir(parents=True)
    for t in range(3):
        ids = np.zeros((24, 40), np.uint8)
        ids[4:14, 6 + t : 20 + t] = 1
        write_mask(seq / f"{t:05d}.png", ids)
    return root / "Annotations" / "480p"


def test_eval_never_overwrites_a_users_own_results_csv(tmp_path):
    """--csv into a folder holding a global_results.csv of another format: refused, the
    file untouched; its own earlier CSVs are replaced."""
    truth = _annotations(tmp_path)
    out = tmp_path / "csv"
    out.mkdir()
    theirs = out / "global_results.csv"
    theirs.write_text("team,score\nus,0.9\n")
    result = invoke(eval_cli, "--baseline", "copy-first", "--annotations", truth,
                    "--csv", out)
    assert result.exit_code == 2 and "global_results.csv" in result.output
    assert theirs.read_text() == "team,score\nus,0.9\n"
    theirs.unlink()
    for _ in range(2):  # the second run replaces the first one's files
        result = invoke(eval_cli, "--baseline", "copy-first", "--annotations", truth,
                        "--csv", out)
        assert result.exit_code == 0, result.output


def test_run_with_a_checkpoint_but_no_backend_names_the_torch_backend(tmp_path):
    """--ckpt without --backend (default tflite): the message offers --backend torch as
    well as an export."""
    frames = tmp_path / "frames"
    frames.mkdir()
    write_mask(frames / "00000.png", np.ones((32, 48), np.uint8))
    result = invoke(run_cli, "--ckpt", "seeded", "--frames", frames, "--mask",
                    frames / "00000.png", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "add --backend torch" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_benchmark_binary_that_prints_no_timings_is_named_so(tmp_path):
    """A binary that exits 0 with output benchmark_model never prints: said as such, not
    as a failure with exit 0."""
    from mobilevos_deploy.bench.api import run_local_benchmark_model

    fake = tmp_path / "benchmark_model"
    fake.write_text("#!/bin/sh\necho 'hello from another tool'\n")
    fake.chmod(0o755)
    with pytest.raises(UserError) as err:
        run_local_benchmark_model(fake, tmp_path / "m.tflite", 2, 3, 1, 30)
    message = str(err.value)
    assert "printed no timings" in message and "hello from another tool" in message
    assert "failed (exit 0)" not in message


def test_eval_refuses_annotations_with_a_stray_png_beside_the_sequences(tmp_path):
    """A PNG at the root of a folder of sequence folders: which did the user mean? (It used
    to be read as a one-sequence folder, then 'result frame missing'.)"""
    truth = _annotations(tmp_path)
    write_mask(truth / "stray.png", np.zeros((24, 40), np.uint8))
    result = invoke(eval_cli, "--baseline", "copy-first", "--annotations", truth)
    assert result.exit_code == 2 and "stray PNGs" in result.output, result.output
