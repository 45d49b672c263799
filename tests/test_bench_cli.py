"""mvos-bench end to end: the phone path against the stand-in adb and a stand-in
benchmark_model (both in tests/standin; no phone is attached here), and the host path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilevos_deploy.cli.bench import main as bench_cli

STANDIN = Path(__file__).resolve().parent / "standin"
SIZE = "32x48"


def launcher(path: Path, script: Path) -> str:
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")  # shared: the first test exports, others reuse


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


def bench(phone, exports, *args: str):
    return CliRunner().invoke(bench_cli, [
        "--device", "s22", "--queue", "1", "--size", SIZE, "--exports", str(exports),
        "--results", str(phone["results"]), "--adb", phone["adb"],
        "--benchmark-binary", phone["bm"], "--runs", "5", "--warmup", "1", "--cooldown", "0",
        *args])


def rows(phone) -> list[dict]:
    return json.loads(phone["results"].with_suffix(".json").read_text())


def test_phone_point_end_to_end(phone, exports, tmp_path):
    result = bench(phone, exports, "--plot", str(tmp_path / "fig.png"))
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
    assert (pushed / f"mobilenetv2-noaspp_q1_{SIZE}_step_fp16.tflite").exists()
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert phone["results"].read_text().splitlines()[0].startswith("variant,queue,size")

    again = bench(phone, exports)  # measured already: skipped
    assert again.exit_code == 0 and "0 point(s) measured, 1 already" in again.output


def test_partial_delegation_is_flagged(phone, exports, monkeypatch):
    monkeypatch.setenv("MVOS_FAKE_PARTIAL", "1")
    result = bench(phone, exports, "--force")
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
def test_device_errors_exit_2(phone, exports, monkeypatch, devices, extra, message):
    monkeypatch.setenv("MVOS_FAKE_DEVICES", devices)
    result = bench(phone, exports, *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not phone["results"].exists()


def test_missing_benchmark_binary_and_adb(phone, exports, tmp_path):
    result = CliRunner().invoke(bench_cli, ["--device", "s22", "--size", SIZE, "--adb",
                                            phone["adb"]])
    assert result.exit_code == 2 and "--benchmark-binary" in result.output
    result = bench(phone, exports, "--adb", str(tmp_path / "no-adb"))
    assert result.exit_code == 2 and "adb not found" in result.output
    result = bench(phone, exports, "--benchmark-binary", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_unknown_profile(phone, exports):
    result = bench(phone, exports, "--device", "pixel99")
    assert result.exit_code == 2 and "no device profile 'pixel99'" in result.output


def test_host_engines_side_by_side(exports, tmp_path):
    result = CliRunner().invoke(bench_cli, [
        "--queue", "1", "--size", SIZE, "--exports", str(exports), "--engines",
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


def test_host_op_profile(exports, tmp_path):
    result = CliRunner().invoke(bench_cli, [
        "--queue", "1", "--size", SIZE, "--exports", str(exports), "--engines", "tflite",
        "--runs", "2", "--warmup", "1", "--op-profile", "--results", str(tmp_path / "h.csv")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "h.json").read_text())[0]
    table = Path(row["log_file"]).read_text()
    assert f"log: {row['log_file']}" in result.output
    # every op of the graph was cut out and timed: the table's counts add up to the graph's
    from ai_edge_litert.interpreter import Interpreter

    model = next(exports.glob("*_q1_32x48")) / "step_fp16.tflite"
    n_ops = len(Interpreter(model_path=str(model))._get_ops_details())
    counts = [int(line.split("|")[2]) for line in table.splitlines()
              if line.startswith("| ") and line.split("|")[2].strip().isdigit()]
    assert sum(counts) == n_ops and f"{n_ops} ops, timed alone" in table
    assert "| CONV_2D |" in table and "| BATCH_MATMUL |" in table


def test_an_export_is_reused_only_for_the_same_point_and_graph_revision():
    from mobilevos_deploy.bench.api import reusable
    from mobilevos_deploy.export.graphs import GRAPH_REVISION

    m = {"graph_revision": GRAPH_REVISION, "variant": "resnet18", "queue": 2,
         "size": [64, 96], "checkpoint": None, "precisions": ["fp32", "fp16"]}
    assert reusable(m, "resnet18", 2, (64, 96), None)
    assert not reusable({**m, "graph_revision": GRAPH_REVISION - 1}, "resnet18", 2, (64, 96),
                        None)
    assert not reusable({k: v for k, v in m.items() if k != "graph_revision"}, "resnet18", 2,
                        (64, 96), None)
    assert not reusable(m, "resnet18", 3, (64, 96), None)
    assert not reusable(m, "resnet18", 2, (64, 96), "ab" * 32)
    assert not reusable({**m, "precisions": ["fp16"]}, "resnet18", 2, (64, 96), None)
