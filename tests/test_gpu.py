"""LiteRT's GPU accelerator (SwiftShader's software Vulkan here, a real GPU elsewhere): the
device set-up, the delegation verdict and its negative controls, the GPU parity gate and
the bug it found, the fp16-compute gate, and mvos-check."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mobilevos_deploy.model.stages as stages_module
from mobilevos_deploy.cli.check import main as check_cli
from mobilevos_deploy.errors import UserError
from mobilevos_deploy.export import api
from mobilevos_deploy.export.api import GateError, export_model
from mobilevos_deploy.export.gates.analyzer import ENV_VAR, check_gpu
from mobilevos_deploy.export.gates.cpu import fp16_compute
from mobilevos_deploy.export.gates.gpu import gpu_run_gate
from mobilevos_deploy.export.gates.reference import Reference
from mobilevos_deploy.nn.readout import MemoryReadout
from mobilevos_deploy.runtime import gpu as gpu_run
from mobilevos_deploy.runtime.gpu import GpuSession, computes_in_fp16, worker_env
from mobilevos_deploy.runtime.gpu_worker import parse_log

from .conftest import EXPORT_HEIGHT, EXPORT_WIDTH, seeded

NAME = "mobilenetv2-noaspp"


def torch_reference(student, queue: int, height: int, width: int):
    """The specs and what the gates compare with, from PyTorch alone (as api builds it)."""
    ref = Reference(student, queue, height, width, False)
    ref.rollout()
    return ref.specs, ref


def shipped(folder: Path) -> list[Path]:
    return [folder / f"model_{p}.tflite" for p in ("fp32", "fp16")]


# --- the worker and the Vulkan device ---------------------------------------------------------

LOG = """\
I0000 00:00:1795297802.483011 2601 environment.cc:532] Selected adapter: SwiftShader Device \
(Subzero), arch=swiftshader, vendor=google, backend=Vulkan, adapterType=CPU / Software
ERROR: Following operations are not supported by GPU delegate:
ARG_MAX: Tensor type(INT64) is not supported. output_0
CAST: Tensor type(INT64) is not supported. model/ExpandDims
No operations will run on the GPU, and all 3 operations will run on the CPU.
E0000 delegate_webgpu.cc:478] Failed to create litert::ml_drift::DelegateKernelLiteRt: \
RESOURCE_EXHAUSTED: Requested allocation size - 1280000000 bytes.
"""


def test_worker_log_gives_the_adapter_and_every_refused_op():
    parsed = parse_log(LOG)
    assert parsed["adapter"]["name"] == "SwiftShader Device (Subzero)"
    assert parsed["adapter"]["backend"] == "Vulkan" and parsed["adapter"]["software"]
    assert [u["op"] for u in parsed["unsupported"]] == ["ARG_MAX", "CAST"]
    assert "INT64" in parsed["unsupported"][0]["reason"]
    assert parsed["errors"] == ["RESOURCE_EXHAUSTED: Requested allocation size - 1280000000 "
                                "bytes."]
    hardware = LOG.replace("CPU / Software", "Integrated GPU").split("\n")[0]
    assert not parse_log(hardware)["adapter"]["software"]


def test_the_vulkan_driver_is_chosen_in_one_place(monkeypatch, tmp_path):
    for var in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES", gpu_run.ICD_VAR):
        monkeypatch.delenv(var, raising=False)
    env = worker_env()  # the project's SwiftShader from `make vulkan`
    assert env["VK_ICD_FILENAMES"] == str(gpu_run.SWIFTSHADER_ICD)
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(gpu_run.VULKAN_DIR)
    monkeypatch.setenv(gpu_run.ICD_VAR, "system")  # an installed GPU driver, found by the loader
    assert "VK_ICD_FILENAMES" not in worker_env()
    monkeypatch.delenv(gpu_run.ICD_VAR)
    monkeypatch.setenv("VK_ICD_FILENAMES", "/users/own.json")  # the user's choice is kept
    assert worker_env()["VK_ICD_FILENAMES"] == "/users/own.json"
    monkeypatch.setenv(gpu_run.ICD_VAR, str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="no such Vulkan driver file.*make vulkan"):
        worker_env()


def test_no_vulkan_device_names_the_fix(exports, monkeypatch, tmp_path):
    """A driver file whose library is missing: the loader finds no device at all."""
    step = exports(NAME, 2).folder / "model_fp32.tflite"  # exported while there is one
    icd = tmp_path / "icd.json"
    icd.write_text(json.dumps({"file_format_version": "1.0.0", "ICD": {
        "library_path": str(tmp_path / "libnothing.so"), "api_version": "1.0.5"}}))
    monkeypatch.setenv(gpu_run.ICD_VAR, str(icd))
    with GpuSession() as session, pytest.raises(UserError, match="no Vulkan device.*make vulkan"):
        session.load("step", step)
    # an export without it fails, unless told to go on without the GPU gate
    warnings: list[str] = []
    gates, entry = gpu_run_gate([step], {}, None, True, warnings, tmp_path)
    assert gates == [] and entry["verdict"] == "not checked" and "make vulkan" in warnings[0]
    with pytest.raises(UserError, match="no Vulkan device"):
        gpu_run_gate([step], {}, None, False, [], tmp_path)


def test_missing_gpu_venv_names_the_fix(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/nonexistent/python")
    with pytest.raises(UserError, match="make gpu-venv"):
        GpuSession()


def test_fp16_probe_tells_fp16_from_fp32_compute(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "probe.tflite"
    path.write_bytes(gpu_run.add_model())
    x = np.ones((1, 1, 1, 4), np.float32)
    z = Interpreter(model_path=str(path)).get_signature_runner()(x=x, y=x * 2.0**-12)["z"]
    assert np.all(z == np.float32(1 + 2.0**-12))  # fp32 keeps the 2^-12 ...
    assert np.float16(1) + np.float16(2.0**-12) == np.float16(1)  # ... fp16 loses it
    with GpuSession() as session:
        fp16 = computes_in_fp16(session, tmp_path)
        assert session.adapter is not None
        if session.adapter.name.startswith("SwiftShader"):
            assert fp16 is False  # SwiftShader has no shaderFloat16 (vulkaninfo)


# --- the delegation verdict, proven on negative controls -------------------------------------

def test_accelerator_refuses_the_negative_control(control_tflite):
    with GpuSession() as session:
        report = session.load("control", control_tflite)
    assert not report.fully_accelerated
    assert "ARG_MAX" in {u["op"] for u in report.unsupported}


def test_export_gate_refuses_what_the_accelerator_refuses(control_tflite, tmp_path):
    with pytest.raises(GateError) as err:
        gpu_run_gate([control_tflite], {}, None, False, [], tmp_path)
    assert "ARG_MAX" in str(err.value) and "--allow-cpu-fallback" in str(err.value)


def test_topk_the_two_verdicts_disagree(topk_tflite):
    """Recorded behaviour: LiteRT's accelerator runs TOPK_V2, the classic delegate's rules
    (TensorFlow 2.17's analyzer, what benchmark_model --use_gpu applies) do not. mvos-check
    asks both, so such a file does not pass."""
    with GpuSession() as session:
        assert session.load("topk", topk_tflite).fully_accelerated
    assert {f.op for f in check_gpu([topk_tflite])[topk_tflite.name].flagged} == {"TOPK_V2"}
    result = CliRunner().invoke(check_cli, [str(topk_tflite)])
    assert result.exit_code == 1 and "TOPK_V2" in result.output


# --- the GPU parity gate ----------------------------------------------------------------------

def test_gpu_parity_fails_against_another_students_reference(exports, students, tmp_path,
                                                             monkeypatch):
    """The GPU results of the seed-0 export, judged against a perturbed student's PyTorch:
    the fp32 files fail on every output; the fp16 files (run here although SwiftShader is a
    software device) are judged against LiteRT's CPU interpreter on the same file, and
    pass."""
    import mobilevos_deploy.export.gates.gpu as gate_module

    monkeypatch.setattr(gate_module, "RUN_FP16_TWINS_ON_SOFTWARE", True)
    other = copy.deepcopy(students[NAME])
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    specs, ref = torch_reference(other, 2, EXPORT_HEIGHT, EXPORT_WIDTH)
    gates, entry = gpu_run_gate(shipped(exports(NAME, 2).folder), specs, ref.for_gpu(), False,
                                [], tmp_path)
    parity = gates[0]
    assert not parity.passed
    rows = "\n".join(parity.offending)
    assert "model_fp32/step prob" in rows and "model_fp32/init mem_keys" in rows
    assert "fp16" not in rows
    step16 = entry["files"]["model_fp16.tflite"]["signatures"]["step"]
    assert step16["reference"].startswith("litert-cpu") and step16["errors"]["prob"] <= 1e-4


def test_where_the_device_computes_in_fp16_the_fp16_files_roll_out_on_it(
        exports, students, tmp_path, monkeypatch):
    """The path a GPU with fp16 takes (SwiftShader has none, so it is forced here and the
    rollout runs in fp32): the fp16 files, precision loss allowed, against the PyTorch
    rollout as parity.fp16_gate judges fp16."""
    import mobilevos_deploy.export.gates.gpu as gate_module

    monkeypatch.setattr(gate_module, "computes_in_fp16", lambda session, work: True)
    specs, ref = torch_reference(students[NAME], 2, EXPORT_HEIGHT, EXPORT_WIDTH)
    gates, entry = gpu_run_gate(shipped(exports(NAME, 2).folder), specs, ref.for_gpu(), False,
                                [], tmp_path)
    assert [g.name for g in gates] == ["gpu_parity", "rollout_gpu_fp16"]
    assert all(g.passed for g in gates) and gates[1].figures["min_iou"] >= 0.99
    assert gates[1].figures["closed_loop_j"] >= gates[1].figures["reference_j"] - 0.01
    assert entry["fp16_compute_available"] is True


def test_queue_1_pass_through_state_is_a_tensor_of_its_own(students, tmp_path, monkeypatch):
    """The bug LiteRT's GPU accelerator found: at queue 1 the state used to pass through as
    the input tensor itself, and the accelerator then computed from garbage (prob error
    0.25). The conversion check now refuses such a file; without that check the GPU gate
    fails the export (the CPU interpreter's gates did not see it). One export (suite
    time): the conversion check is recorded instead of enforced, the GPU gate fails the
    export, and the check, asked of the files the export handed it, refuses the step."""
    import shutil

    from mobilevos_deploy.runtime.runners import check_io

    monkeypatch.setattr(stages_module, "pass_through", lambda x: x)
    handed = {}

    def record(path, spec):
        handed[f"{path.name}/{spec.name}"] = (tmp_path / path.name, spec)
        shutil.copyfile(path, tmp_path / path.name)

    monkeypatch.setattr(api, "check_io", record)
    with pytest.raises(GateError) as err:
        export_model(seeded(students[NAME], NAME), 1, 32, 48, tmp_path / "b", objects=False,
                     precisions=["fp32"])
    message = str(err.value)
    assert "gpu_parity" in message and "model_fp32/step prob" in message
    assert "rollout_tflite" not in message  # XNNPACK runs the aliased file correctly
    assert sorted(handed) == ["model_fp32.tflite/init", "model_fp32.tflite/step"]
    check_io(*handed["model_fp32.tflite/init"])
    with pytest.raises(AssertionError, match="an output is also an input tensor"):
        check_io(*handed["model_fp32.tflite/step"])


# --- the fp16-compute gate --------------------------------------------------------------------

def _readout_case(norm: float, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    ck, cv, h, w, slots = 64, 32, 6, 9, 3
    hw = h * w
    mk = torch.randn(1, ck, slots * hw, generator=g, dtype=torch.float64)
    mk = mk / mk.norm(dim=1, keepdim=True) * norm
    mv = torch.randn(1, cv, slots * hw, generator=g, dtype=torch.float64)
    valid = torch.ones(1, 1, slots * hw, dtype=torch.float64)
    q = mk[..., :hw] + 0.02 * norm * torch.randn(1, ck, hw, generator=g, dtype=torch.float64)
    valid[..., 2 * hw :] = 0.0  # an empty slot holding the queries themselves and garbage
    mk[..., 2 * hw :], mv[..., 2 * hw :] = q, 1e3
    q = q.reshape(1, ck, h, w)
    exact = MemoryReadout(ck)
    exact.compute_dtype = torch.float64
    half = MemoryReadout(ck)
    half.compute_dtype = dtype
    want = exact(mk, mv, valid, q)
    got = half(mk.to(dtype), mv.to(dtype), valid.to(dtype), q.to(dtype)).double()
    return got, want


@pytest.mark.parametrize("norm", [3.0, 30.0, 300.0])
def test_fp16_readout_keeps_empty_slots_out_and_large_keys_finite(norm):
    """In fp16 the -1e4 empty-slot penalty has a spacing of 8, and |mk|^2 of a key of norm
    300 (90000) is beyond fp16's 65504: the empty slot, whose keys equal the queries, must
    still get no weight (its values are 1000), and nothing may overflow."""
    got, want = _readout_case(norm, torch.float16)
    assert torch.isfinite(got).all()
    err = float(((got - want).abs() / (1 + want.abs())).max())
    assert err <= 2e-3, err
    assert float(want.abs().max()) < 10  # the garbage values (1000) took no part


def test_half_storage_rounds_every_result_to_fp16():
    """The fp16-compute simulation: each op's result is an fp16 value, overflow is inf."""
    from mobilevos_deploy.export.gates.fp16_compute import HalfStorage, to_half

    x = torch.ones(3)
    with HalfStorage():
        assert torch.equal(x + 2.0**-12, x)  # 1 + 2^-12 is 1 in fp16, not in fp32
        assert torch.isinf(torch.full((2,), 300.0).pow(2).sum()).item()  # 90000 > 65504
        assert torch.equal(torch.nn.functional.conv2d(torch.ones(1, 1, 1, 1),
                                                      torch.full((1, 1, 1, 1), 1 / 3)),
                           to_half(torch.full((1, 1, 1, 1), 1 / 3)))
    assert not torch.equal(x + 2.0**-12, x)


def test_fp16_compute_gate_fails_when_keys_overflow_fp16(students):
    """Keys about 30x larger than fp16 can square (norm ~880): fp32 is untroubled, the
    gate's fp16 rollout is not finite, and it says so."""
    student = copy.deepcopy(students[NAME])
    with torch.no_grad():
        student.key_encoder.key_proj.weight.mul_(300.0)
        student.key_encoder.key_proj.bias.mul_(300.0)
    specs, ref = torch_reference(student, 2, EXPORT_HEIGHT, EXPORT_WIDTH)
    assert np.isfinite(ref.probs).all()
    gate = fp16_compute(ref)
    assert not gate.passed and gate.figures["max_key_norm"] > 724
    assert any("non-finite" in row for row in gate.offending), gate.offending


# --- mvos-check -----------------------------------------------------------------------------

def test_check_passes_our_export(exports):
    files = [str(p) for p in shipped(exports(NAME, 2).folder)]
    result = CliRunner().invoke(check_cli, files)
    assert result.exit_code == 0, result.output
    assert result.output.count("GPU OK") == 2
    assert result.output.count("fully accelerated") == 2


def test_check_flags_the_negative_control_by_both_verdicts(control_tflite):
    result = CliRunner().invoke(check_cli, [str(control_tflite)])
    assert result.exit_code == 1
    accelerator, analyzer = result.output.split("TensorFlow 2.17 analyzer")
    assert "refused" in accelerator and "ARG_MAX" in accelerator
    assert "incompatible" in analyzer and "ARG_MAX" in analyzer and "TOPK_V2" in analyzer


def test_a_tensor_beyond_the_devices_largest_allocation_is_refused(tmp_path):
    """The accelerator checks every tensor against the device's largest allocation when it
    compiles (SwiftShader: 1 GiB); the analyzer, which knows no device, approves. A 32 GB
    tensor is beyond any GPU's single allocation."""
    path = tmp_path / "huge.tflite"
    path.write_bytes(gpu_run.add_model((1, 1, 2_000_000_000, 4)))
    result = CliRunner().invoke(check_cli, [str(path)])
    assert result.exit_code == 1, result.output
    accelerator, analyzer = result.output.split("TensorFlow 2.17 analyzer")
    assert "RESOURCE_EXHAUSTED" in accelerator and "allocation size" in accelerator
    assert "largest tensor 30517.6 MiB" in accelerator
    assert analyzer.startswith(": compatible")


def test_check_bad_input_exits_2(tmp_path):
    (tmp_path / "notes.tflite").write_text("not a model")
    for path in (tmp_path / "missing.tflite", tmp_path / "notes.tflite"):
        result = CliRunner().invoke(check_cli, [str(path)])
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and "Traceback" not in result.output


def test_check_names_a_truncated_file_as_damaged(exports, tmp_path):
    """A .tflite cut short in a copy: its header is right, but the interpreters both
    checkers run crash on it (the message used to blame the GPU venv). It is named as a
    damaged file, exit 2."""
    data = (exports(NAME, 2).folder / "model_fp32.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    result = CliRunner().invoke(check_cli, [str(cut)])
    assert result.exit_code == 2, result.output
    assert "damaged TFLite file" in result.output and "make gpu-venv" not in result.output
