"""mvos-bench end to end: the phone path against the stand-in adb and a stand-in
benchmark_model (both in tests/standin; no phone is attached here), and the host path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilevos_deploy.cli.bench import main as bench_cli

from .conftest import EXPORT_HEIGHT, EXPORT_WIDTH, TRAINED

STANDIN = Path(__file__).resolve().parent / "standin"
SIZE = f"{EXPORT_HEIGHT}x{EXPORT_WIDTH}"
FOLDER = f"mobilenetv2-noaspp_q2_{SIZE}"  # where mvos-bench looks for the default point


def launcher(path: Path, script: Path) -> str:
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def bench_exports(tmp_path_factory, exports) -> Path:
    """An --exports folder holding the session's export of the shipped student (queue 2,
    with the K-object graphs) under the name mvos-bench looks for: every test here reuses
    it. That mvos-bench makes what it lacks is test_a_missing_export_is_made_with_the_point."""
    import shutil

    root = tmp_path_factory.mktemp("exports")
    shutil.copytree(exports(TRAINED, 2).folder, root / FOLDER)
    return root


@pytest.fixture
def phone(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("MVOS_FAKE_ROOT", str(tmp_path / "phone"))
    monkeypatch.setenv("MVOS_FAKE_DEVICES", "R5CT10ABCDE:device")
    monkeypatch.delenv("MVOS_BENCHMARK_MODEL", raising=False)
    return {"adb": launcher(bin_dir / "adb", STANDIN / "adb.py"),
            "bm": launcher(bin_dir / "benchmark_model", STANDIN / "benchmark_model.py"),
            "root": tmp_path / "phone", "results": tmp_path / "r" / "bench.csv"}


def bench(phone, bench_exports, *args: str):
    return CliRunner().invoke(bench_cli, [
        "--device", "s22", "--queue", "2", "--size", SIZE, "--exports", str(bench_exports),
        "--results", str(phone["results"]), "--adb", phone["adb"],
        "--benchmark-binary", phone["bm"], "--runs", "5", "--warmup", "1", "--cooldown", "0",
        *args])


def rows(phone) -> list[dict]:
    return json.loads(phone["results"].with_suffix(".json").read_text())


def test_phone_point_end_to_end(phone, bench_exports, tmp_path):
    result = bench(phone, bench_exports, "--plot", str(tmp_path / "fig.png"))
    assert result.exit_code == 0, result.output
    [row] = rows(phone)
    assert row["device"] == "s22" and row["device_model"] == "SM-S901B"
    assert row["soc"] == "SM8450" and row["android"] == "14"
    assert row["engine"] == "tflite" and row["delegate"] == "gpu"
    assert row["delegation"] == "full" and row["mean_ms"] > 0 and row["min_ms"] <= row["mean_ms"]
    assert row["peak_memory_mb"] == 42.5  # what the stand-in prints
    assert "--use_gpu=true" in Path(row["log_file"]).read_text()
    pushed = phone["root"] / "data/local/tmp/mobilevos"
    assert (pushed / "benchmark_model").exists()
    assert (pushed / f"{FOLDER}_model_fp16.tflite").exists()
    log = Path(row["log_file"]).read_text()
    assert "--signature_to_run_for_benchmark=step" in log and "Signature to run: [step]" in log
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert phone["results"].read_text().splitlines()[0].startswith("variant,queue,size")

    again = bench(phone, bench_exports)  # measured already: skipped
    assert again.exit_code == 0 and "0 point(s) measured, 1 already" in again.output


def test_partial_delegation_is_flagged(phone, bench_exports, monkeypatch):
    monkeypatch.setenv("MVOS_FAKE_PARTIAL", "1")
    result = bench(phone, bench_exports, "--force")
    assert result.exit_code == 0, result.output
    assert "only 12 ops ran on the GPU, 3 on the CPU" in result.output
    [row] = rows(phone)
    assert (row["delegation"], row["gpu_ops"], row["cpu_ops"]) == ("partial", 12, 3)


@pytest.mark.parametrize(("devices", "extra", "message"), [
    ("", [], "no Android device attached"),
    ("R5CT10ABCDE:unauthorized", [], "Allow USB debugging"),
    ("R5CT10ABCDE:offline", [], "adb kill-server"),
    ("A:device,B:device", [], "several devices attached"),
    ("A:device,B:device", ["--serial", "C"], "no device with serial 'C'"),
])
def test_device_errors_exit_2(phone, bench_exports, monkeypatch, devices, extra, message):
    monkeypatch.setenv("MVOS_FAKE_DEVICES", devices)
    result = bench(phone, bench_exports, *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not phone["results"].exists()


def test_missing_benchmark_binary_and_adb(phone, bench_exports, tmp_path):
    result = CliRunner().invoke(bench_cli, ["--device", "s22", "--size", SIZE, "--adb",
                                            phone["adb"]])
    assert result.exit_code == 2 and "--benchmark-binary" in result.output
    result = bench(phone, bench_exports, "--adb", str(tmp_path / "no-adb"))
    assert result.exit_code == 2 and "adb not found" in result.output
    result = bench(phone, bench_exports, "--benchmark-binary", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_unknown_profile(phone, bench_exports):
    result = bench(phone, bench_exports, "--device", "pixel99")
    assert result.exit_code == 2 and "no device profile 'pixel99'" in result.output


def test_phone_objects_time_each_graph_and_sum_a_frame(phone, bench_exports):
    """--objects on the phone: benchmark_model times the step and the K-object loop's
    graphs of one export, and each K's frame row is encode + K x (segment + memorize) of
    that run, beside K x step."""
    from mobilevos_deploy.files import sha256

    folder = bench_exports / FOLDER
    manifest_sha = sha256(folder / "manifest.json")

    def run(*extra):
        return bench(phone, bench_exports, "--runs", "3", "--objects", "1-3", *extra)

    result = run()
    assert result.exit_code == 0, result.output
    got = {(r["graph"], r["objects"]): r for r in rows(phone)}
    graphs = ("step", "encode", "segment", "memorize")
    assert set(got) == {*((g, None) for g in graphs), *(("frame", k) for k in (1, 2, 3))}
    assert {r["manifest_sha256"] for r in got.values()} == {manifest_sha}  # reused, one run
    ms = {g: got[g, None]["mean_ms"] for g in graphs}
    assert all(v > 0 for v in ms.values())
    for k in (1, 2, 3):
        frame = got["frame", k]
        assert frame["mean_ms"] == pytest.approx(ms["encode"] + k * (ms["segment"]
                                                                     + ms["memorize"]))
        assert frame["delegation"] == "full" and frame["p50_ms"] is None
        today = k * ms["step"]
        assert f"K={k}: encode once + K x (segment + memorize) = {frame['mean_ms']:.1f} ms " \
               f"per frame; K x step = {today:.1f} ms" in result.output
    pushed = phone["root"] / "data/local/tmp/mobilevos" / f"{folder.name}_model_fp16.tflite"
    assert pushed.read_bytes() == (folder / "model_fp16.tflite").read_bytes()
    for g in graphs:  # each graph, a signature of the one model, ran on the phone's GPU
        log = Path(got[g, None]["log_file"]).read_text()
        assert f"--graph=/data/local/tmp/mobilevos/{pushed.name}" in log
        assert f"--signature_to_run_for_benchmark={g}" in log
        assert f"Signature to run: [{g}]" in log
    assert "K=3 frame" in result.output

    again = run()  # measured already: nothing re-timed
    assert again.exit_code == 0 and "0 point(s) measured, 4 already" in again.output
    more = bench(phone, bench_exports, "--runs", "3", "--objects", "2,4")  # K=4 is new
    assert more.exit_code == 0 and "4 point(s) measured" in more.output, more.output
    frames = {r["objects"]: r for r in rows(phone) if r["graph"] == "frame"}
    assert sorted(frames) == [2, 4]  # K = 1 and 3 were the earlier run's: not kept beside
    ms = {r["graph"]: r["mean_ms"] for r in rows(phone) if r["graph"] in graphs}
    for k, frame in frames.items():  # summed from this run's graph rows
        assert frame["mean_ms"] == pytest.approx(ms["encode"] + k * (ms["segment"]
                                                                     + ms["memorize"]))
    phone["results"].with_suffix(".json").write_text(json.dumps(
        [r for r in rows(phone) if r["graph"] != "segment"]))
    partly = run()  # one graph missing: the whole point again, so a frame never mixes runs
    assert partly.exit_code == 0 and "4 point(s) measured" in partly.output


def test_a_missing_export_is_made_with_the_point(bench_exports, tmp_path, monkeypatch):
    """Where no folder matches, the export library gets the point's student, queue, size and
    folder, with the K-object graphs for --objects (export_model itself: test_export.py);
    a matching folder is reused without a call."""
    from mobilevos_deploy.bench import api
    from mobilevos_deploy.files import sha256
    from mobilevos_deploy.model.checkpoint import DEFAULT_CHECKPOINT

    calls = []

    def export_model(chosen, queue, height, width, folder, **kw):
        calls.append(((chosen.variant, queue, height, width, folder), chosen, kw))
        raise RuntimeError("recorded")

    monkeypatch.setattr(api, "export_model", export_model)
    for objects in (False, True):
        with pytest.raises(RuntimeError, match="recorded"):
            api.ensure_export("mobilenetv2-noaspp", 1, (32, 48), None, tmp_path, objects)
        point, chosen, kw = calls[-1]
        assert point == ("mobilenetv2-noaspp", 1, 32, 48, tmp_path / "mobilenetv2-noaspp_q1_32x48")
        assert kw["objects"] is objects and chosen.trained is True
        assert chosen.sha256 == sha256(DEFAULT_CHECKPOINT)
    with pytest.raises(RuntimeError, match="recorded"):  # another student: not reused
        api.ensure_export("mobilenetv2-noaspp", 2, tuple(map(int, SIZE.split("x"))),
                          Path("seeded"), bench_exports, True)
    assert calls[-1][1].trained is False and len(calls) == 3
    folder, _ = api.ensure_export("mobilenetv2-noaspp", 2, tuple(map(int, SIZE.split("x"))),
                                  None, bench_exports, True)
    assert folder == bench_exports / FOLDER and len(calls) == 3


def test_objects_need_benchmark_model(phone, bench_exports, tmp_path):
    """On this host --objects runs a Linux benchmark_model (the stand-in here) on each
    graph; without one it stops and names the script that times the host's whole loop."""
    args = ["--queue", "2", "--size", SIZE, "--exports", str(bench_exports), "--objects", "2",
            "--runs", "2", "--warmup", "1", "--results", str(tmp_path / "host.csv")]
    result = CliRunner().invoke(bench_cli, args)
    assert result.exit_code == 2 and "benchmarks/objects_latency.py" in result.output
    assert not (tmp_path / "host.csv").exists()
    result = CliRunner().invoke(bench_cli, ["--objects", "0"])
    assert result.exit_code == 2 and "a number of objects must be in 1..16" in result.output
    result = CliRunner().invoke(bench_cli, [*args, "--benchmark-binary", phone["bm"]])
    assert result.exit_code == 0, result.output
    got = {(r["graph"], r["objects"]): r
           for r in json.loads((tmp_path / "host.json").read_text())}
    assert set(got) == {("step", None), ("encode", None), ("segment", None),
                        ("memorize", None), ("frame", 2)}
    assert {(r["device"], r["engine"], r["threads"]) for r in got.values()} == {
        ("host", "tflite", 2)}
    assert "K=2: encode once" in result.output
    assert "TFLite file only; onnx, torch not run" in result.output  # the default engines


def test_host_engines_side_by_side(bench_exports, tmp_path):
    result = CliRunner().invoke(bench_cli, [
        "--queue", "2", "--size", SIZE, "--exports", str(bench_exports), "--engines",
        "tflite,tflite-gpu,onnx,torch", "--runs", "3", "--warmup", "1",
        "--results", str(tmp_path / "host.csv")])
    assert result.exit_code == 0, result.output
    got = {(r["engine"], r["delegate"], r["precision"]): r
           for r in json.loads((tmp_path / "host.json").read_text())}
    assert set(got) == {("tflite", "xnnpack", "fp16"), ("tflite-gpu", "litert-gpu", "fp16"),
                        ("onnx", "cpu", "fp32"), ("torch", "cpu", "fp32")}
    for r in got.values():
        assert r["device"] == "host" and r["runs"] == 3
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["max_ms"] and r["peak_memory_mb"] > 10
    gpu = got["tflite-gpu", "litert-gpu", "fp16"]
    # the GPU worker's own figures: the Vulkan device named, no CPU thread count
    assert gpu["threads"] is None and gpu["delegation"] == "full" and gpu["gpu_device"]
    assert all(r["threads"] == 2 for r in got.values() if r is not gpu)
    if "software" in gpu["gpu_device"]:  # SwiftShader: the table says it is no GPU figure
        assert "NOT a GPU latency" in result.output


def test_host_op_profile(bench_exports, tmp_path):
    result = CliRunner().invoke(bench_cli, [
        "--queue", "2", "--size", SIZE, "--exports", str(bench_exports), "--engines", "tflite",
        "--runs", "2", "--warmup", "1", "--op-profile", "--results", str(tmp_path / "h.csv")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "h.json").read_text())[0]
    table = Path(row["log_file"]).read_text()
    assert f"log: {row['log_file']}" in result.output
    # every op of the graph was cut out and timed: the table's counts add up to the graph's
    from ai_edge_litert.interpreter import Interpreter

    from mobilevos_deploy.export.build.merge import extract_graph

    model = extract_graph((bench_exports / FOLDER / "model_fp16.tflite").read_bytes(), "step")
    n_ops = len(Interpreter(model_content=model)._get_ops_details())
    counts = [int(line.split("|")[2]) for line in table.splitlines()
              if line.startswith("| ") and line.split("|")[2].strip().isdigit()]
    assert sum(counts) == n_ops and f"{n_ops} ops, timed alone" in table
    assert "| CONV_2D |" in table and "| BATCH_MATMUL |" in table


def test_an_export_is_reused_only_for_the_same_point_and_graph_revision():
    from mobilevos_deploy.bench.api import reusable
    from mobilevos_deploy.model.graphs import GRAPH_REVISION

    m = {"graph_revision": GRAPH_REVISION, "variant": "resnet18", "queue": 2,
         "size": [64, 96], "checkpoint": None, "precisions": ["fp32", "fp16"],
         "graphs": {"init": {}, "step": {}}, "converter": {"name": "onnx2tf"}}
    assert reusable(m, "resnet18", 2, (64, 96), None)
    # another converter's files are not the benchmark's default
    assert not reusable({**m, "converter": {"name": "litert-torch"}}, "resnet18", 2, (64, 96),
                        None)
    objects = ("init", "step", "encode", "start", "segment", "memorize")
    assert not reusable(m, "resnet18", 2, (64, 96), None, objects)  # --single-object export
    assert reusable({**m, "graphs": dict.fromkeys(objects, {})}, "resnet18", 2, (64, 96),
                    None, objects)
    assert not reusable({**m, "graph_revision": GRAPH_REVISION - 1}, "resnet18", 2, (64, 96),
                        None)
    assert not reusable({k: v for k, v in m.items() if k != "graph_revision"}, "resnet18", 2,
                        (64, 96), None)
    assert not reusable(m, "resnet18", 3, (64, 96), None)
    assert not reusable(m, "resnet18", 2, (64, 96), "ab" * 32)
    assert not reusable({**m, "precisions": ["fp16"]}, "resnet18", 2, (64, 96), None)
