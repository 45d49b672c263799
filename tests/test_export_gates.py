"""The export's gates and refusals: coincident dimensions, the GPU checker and its negative
control, bad input, and failures that must leave nothing behind."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mobilevos_deploy.nn.readout as readout_module
from mobilevos_deploy.cli.export import main as export_cli
from mobilevos_deploy.errors import UserError
from mobilevos_deploy.export import api
from mobilevos_deploy.export.api import GateError, export_model
from mobilevos_deploy.export.build.convert import convert_graphs
from mobilevos_deploy.export.gates.analyzer import (
    ENV_VAR,
    check_gpu,
    gpu_delegate_gate,
    parse_report,
)
from mobilevos_deploy.export.gates.parity import (
    UNSURE_BAND,
    fp16_gate,
    looped_steps,
    rollout_gate,
    rollout_states,
)
from mobilevos_deploy.export.gates.reference import Reference
from mobilevos_deploy.model.checkpoint import save_checkpoint
from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.graphs import GraphSpec
from mobilevos_deploy.model.stages import TensorSpec
from mobilevos_deploy.model.student import build_student

from .conftest import seeded

NAME = "mobilenetv2-noaspp"


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- gate 3: onnx2tf's silent mis-transposition when two dimensions coincide -----------------

# mobilenetv2-noaspp has Ck = 64; at 64x64 the memory holds Q*h*w = 4*4*4 = 64 positions.
COINCIDENT = {"queue": 4, "height": 64, "width": 64}


def _no_gpu_gates(monkeypatch) -> None:
    """For tests of a conversion property the CPU runtimes' gates see: the GPU gates (test_gpu.py)
    are switched off (suite time; on 2 cores their worker competes with the converter)."""
    monkeypatch.setattr(api, "gpu_run_gate", lambda *a: ([], {"verdict": "not run"}))
    monkeypatch.setattr(api, "gpu_delegate_gate", lambda *a: (None, {"verdict": "not run"}))


def test_coincident_dimensions_are_avoided_by_construction(students, tmp_path, monkeypatch):
    _no_gpu_gates(monkeypatch)
    student = students[NAME]
    assert student.config.key_dim == COINCIDENT["queue"] * 4 * 4
    result = export_model(seeded(student, NAME), COINCIDENT["queue"], COINCIDENT["height"],
                          COINCIDENT["width"], tmp_path / "ok", precisions=["fp32"],
                          objects=False)
    parity = result.manifest["gates"]["step_parity"]
    assert parity["tflite32.readout"] <= 1e-4 and parity["tflite32.next_mem_values"] <= 1e-4


def test_without_the_padding_onnx2tf_breaks_and_the_gate_says_so(trained, tmp_path,
                                                                  monkeypatch):
    """The same export of the trained default student with the read-out's axis padding
    switched off: onnx2tf converts without complaint, the TFLite read-out is wrong, and the
    step gate fails loudly; so do the rollout gates, which count only the pixels where the
    reference is sure: a mis-converted layer is not confined to the reference's coin tosses."""
    monkeypatch.setattr(readout_module, "distinct_size", lambda size, taken: size)
    _no_gpu_gates(monkeypatch)
    with pytest.raises(GateError) as err:
        export_model(trained, COINCIDENT["queue"], COINCIDENT["height"],
                     COINCIDENT["width"], tmp_path / "bad", objects=False,
                     precisions=["fp32"])  # the fp32 gates are the ones that must fail
    message = str(err.value)
    assert "tflite32 readout" in message and "nothing was written" in message
    assert "rollout_tflite_fp32" in message and "where the reference is sure" in message
    assert leftovers(tmp_path) == []


def test_rollout_gate_excuses_only_the_references_coin_tosses():
    """Flips where the fp32 reference is within UNSURE_BAND of 0.5 pass (they fail the
    all-pixel IoU, which is reported); as many flips where it is sure fail, and so does a
    runtime that drifts to 0.5 everywhere."""
    rng = np.random.default_rng(0)
    ref = rng.choice([0.03, 0.97], size=(4, 24, 40)).astype(np.float32)
    ref[:, :, :4] = 0.5 + UNSURE_BAND / 2  # a boundary the reference cannot call
    coin = ref.copy()
    coin[:, :, :4] = 0.5 - UNSURE_BAND / 2
    excused = rollout_gate("t", ref, coin, 0.99, None)
    assert excused.passed and excused.figures["min_iou"] == 1.0
    assert excused.figures["min_iou_all_pixels"] < 0.99
    assert excused.figures["min_sure_fraction"] == pytest.approx(36 / 40)
    wrong = ref.copy()
    wrong[:, :, 4:8] = 1.0 - wrong[:, :, 4:8]
    failed = rollout_gate("t", ref, wrong, 0.99, None)
    assert not failed.passed and "where the reference is sure" in failed.offending[0]
    assert not rollout_gate("t", ref, np.full_like(ref, 0.499), 0.99, None).passed


class ToyLoop:
    """A tracking loop small enough to reason about: the memory is last frame's mask,
    p = sigmoid(8 (m - 0.5)). Rows 0-9 are the object (m = 1, stable near 0.98), the
    rest background (m = 0, stable near 0.02), and a 2 x 2 patch starts at m = 0.5 + 1e-4,
    the loop's unstable point, where a difference doubles at every frame (a false positive
    the loop can go either way on, as the trained student's occluder at frame 25).
    ``noise`` is added to every probability (rounding); ``write`` maps what is written."""

    spec = GraphSpec("step", (TensorSpec("frame", (1,), "float32", "-"),
                              TensorSpec("mem", (1,), "float32", "-")), ())

    def __init__(self, noise: float = 0.0, write=lambda p: p) -> None:
        self.noise, self.write = noise, write

    def init(self, inputs):
        m = np.zeros((1, 1, 20, 20), np.float32)
        m[..., :10, :] = 1.0
        m[..., 14:16, 4:6] = 0.5 + 1e-4
        return {"mem": m}

    def step(self, inputs):
        p = 1.0 / (1.0 + np.exp(-8.0 * (inputs["mem"] - 0.5))) + self.noise
        return {"prob": p, "next_mem": self.write(p).astype(np.float32)}

    def run(self, frames, ref_states):
        looped = looped_steps(self.init, self.step, self.spec, frames, frames[0, 0], ref_states)
        closed, _ = rollout_states(self.init, self.step, self.spec, frames, frames[0, 0])
        return looped, closed


def test_fp16_gate_judges_steps_not_the_loops_amplification():
    """The redesign of the fp16 rollout gates (parity.fp16_gate), on a loop that amplifies:
    a rounding-sized difference flips the unstable patch in the closed loop, so a pixel-by-
    pixel closed-loop gate fails a runtime with no bug; the looped steps do not. A runtime
    whose memory write is wrong fails, although each of its reads is right, and so does one
    whose closed loop loses the object."""
    frames = np.zeros((16, 1, 20, 20), np.float32)
    truth = np.zeros((15, 20, 20), np.float32)
    truth[:, :10] = 1.0
    reference = ToyLoop()
    ref_probs, ref_states = rollout_states(reference.init, reference.step, ToyLoop.spec,
                                           frames, frames[0, 0])
    assert (ref_probs[-1, 14:16, 4:6] > 0.5 + UNSURE_BAND).all()  # the patch went object
    rounding = ToyLoop(noise=-2e-4)
    looped, closed = rounding.run(frames, ref_states)
    assert not rollout_gate("t", ref_probs, closed, 0.99, None).passed  # the old design
    gate = fp16_gate("t", ref_probs, looped, closed, truth)
    assert gate.passed, gate.offending
    assert gate.figures["closed_loop_min_iou"] < 0.99 and gate.figures["min_iou"] == 1.0

    halved = ToyLoop(write=lambda p: 0.5 * p)  # a mis-converted write, reads untouched
    looped, closed = halved.run(frames, ref_states)
    teacher_forced = np.stack([halved.step(s)["prob"][0, 0] for s in ref_states])
    assert rollout_gate("t", ref_probs, teacher_forced, 0.99, None).passed
    gate = fp16_gate("t", ref_probs, looped, closed, truth)
    assert not gate.passed and "where the reference is sure" in gate.offending[0]
    assert any("closed-loop J" in row for row in gate.offending)

    lost = ref_probs.copy()
    lost[8:, :10] = 0.0  # the closed loop drops the object half way; every step was right
    gate = fp16_gate("t", ref_probs, ref_probs, lost, truth)
    assert not gate.passed and "closed-loop J" in gate.offending[0]


# --- gate 4: the GPU-delegate checker, proven on a negative control --------------------------

def test_gpu_checker_flags_the_negative_control(control_tflite):
    report = check_gpu([control_tflite])[control_tflite.name]
    assert not report.compatible
    assert {"TOPK_V2", "ARG_MAX"} <= {f.op for f in report.flagged}


def test_export_refuses_gpu_incompatible_files_unless_allowed(control_tflite):
    warnings: list[str] = []
    with pytest.raises(GateError, match="TOPK_V2"):
        gpu_delegate_gate([control_tflite], False, warnings)
    reports, entry = gpu_delegate_gate([control_tflite], True, warnings)
    assert entry["verdict"].startswith("incompatible") and "ARG_MAX" in warnings[0]


def test_missing_checker_names_the_fix(control_tflite, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/nonexistent/python")
    with pytest.raises(UserError, match="make gpu-venv"):
        check_gpu([control_tflite])
    warnings: list[str] = []
    reports, entry = gpu_delegate_gate([control_tflite], True, warnings)
    assert reports is None and entry["verdict"] == "not checked" and warnings


REPORT = """Subgraph#0 main(T#0) -> [T#9]
  Op#0 DEQUANTIZE(T#1) -> [T#4]
  Op#1 DEQUANTIZE(T#2) -> [T#5]
  Op#2 CONV_2D(T#0, T#4, T#5) -> [T#6]
GPU COMPATIBILITY WARNING: Expected 1 or 2 input tensor(s), but node has 3 runtime inputs.
  Op#3 CONV_2D(T#6, T#4, T#7) -> [T#8]
GPU COMPATIBILITY WARNING: Expected 1 or 2 input tensor(s), but node has 4 runtime inputs.
GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 2, 3 \
on TFLite runtime version 2.17.1

Tensors of Subgraph#0
  T#0(x) shape:[1, 8, 8, 3], type:FLOAT32
  T#1(w) shape:[4, 3, 3, 3], type:FLOAT16 RO 216 bytes, buffer: 2, data:[??]
  T#2(b) shape:[4], type:FLOAT16 RO 8 bytes, buffer: 3, data:[??]
  T#7(runtime) shape:[4], type:FLOAT32
"""

PADV2 = """  Op#0 DEQUANTIZE(T#1) -> [T#2]
  Op#1 PADV2(T#0, T#3[0, 0, 1, 1, 1, ...], T#2) -> [T#4]
GPU COMPATIBILITY WARNING: Expected 1 runtime input tensor(s), but node has 2 runtime input(s).
GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 \
on TFLite runtime version 2.17.1
  T#1(arith.constant) shape:[], type:FLOAT16 RO 2 bytes, buffer: 2, data:[??]
"""


def test_fp16_dequantize_pattern_is_exempt_and_nothing_else():
    """Op 2's extra inputs are DEQUANTIZE'd fp16 constants (the delegate folds them); op 3
    has a runtime bias tensor besides, so it stays flagged."""
    report = parse_report("m.tflite", REPORT)
    assert report.exempt_fp16_dequantize == 1
    assert [(f.index, f.op) for f in report.flagged] == [(3, "CONV_2D")]
    assert not report.compatible


def test_fp16_pad_value_of_padv2_is_the_same_pattern():
    report = parse_report("m.tflite", PADV2)
    assert report.compatible and report.exempt_fp16_dequantize == 1
    # the same op fed by a runtime tensor instead of a dequantized constant is flagged
    assert not parse_report("m.tflite", PADV2.replace("FLOAT16 RO", "FLOAT32")).compatible


def test_report_without_a_verdict_is_an_error():
    with pytest.raises(UserError, match="no verdict"):
        parse_report("m.tflite", "  Op#0 ADD(T#0, T#1) -> [T#2]\n")


# --- failures leave nothing behind -----------------------------------------------------------

def test_failed_conversion_names_the_step_and_leaves_nothing(students, tmp_path, monkeypatch):
    real = api.Conversion

    def corrupt_then_convert(graphs, work, **kw):  # the converter gets a broken step.onnx
        path, spec = graphs["step"]
        broken = work / "broken" / path.name
        broken.parent.mkdir()
        broken.write_bytes(b"not an onnx file")
        return real(dict(graphs, step=(broken, spec)), work, **kw)

    monkeypatch.setattr(api, "Conversion", corrupt_then_convert)
    with pytest.raises(UserError, match=r"TFLite conversion failed .* at step onnx2tf"):
        export_model(seeded(students[NAME], NAME), 1, 32, 48, tmp_path / "x", objects=False)
    assert leftovers(tmp_path) == []


def test_interrupted_export_stops_the_converter_and_leaves_nothing(students, tmp_path,
                                                                   monkeypatch):
    real, started = api.Conversion, []

    def record(graphs, work, **kw):
        started.append(real(graphs, work, **kw))
        return started[-1]

    def interrupt(*args):
        raise KeyboardInterrupt  # Ctrl-C while PyTorch runs and TensorFlow converts

    monkeypatch.setattr(api, "Conversion", record)
    monkeypatch.setattr(api, "_onnx_gates", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model(seeded(students[NAME], NAME), 1, 32, 48, tmp_path / "x", objects=False)
    assert started and all(p.poll() is not None for p in started[0]._procs)  # stopped
    assert leftovers(tmp_path) == []


def test_refuses_to_replace_a_folder_that_is_not_an_export(students, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an export folder"):
        export_model(seeded(students[NAME], NAME), 1, 32, 48, tmp_path / "mine",
                     objects=False)
    assert leftovers(tmp_path / "mine") == ["notes.txt"]


# --- the CLI's bad input: a clear message, exit code 2, no files -----------------------------

def run_cli(tmp_path: Path, *args: str):
    return CliRunner().invoke(export_cli, ["--size", "32x48", "--out", str(tmp_path / "o"),
                                           *args])


@pytest.mark.parametrize(("args", "message"), [
    (["--variant", "resnet50"], "unknown variant 'resnet50'"),
    (["--size", "40x48"], "multiples of 16"),
    (["--queue", "0"], "a queue length must be in 1..64"),
    (["--queue", "65"], "a queue length must be in 1..64"),
    (["--queue", "1-"], "expected a queue length"),
    (["--queue", "5-2"], "expected a queue length"),
    (["--queue", "two"], "expected a queue length"),
    (["--precision", "int8"], "expected a list from fp32,fp16"),
    (["--size", "16x16"], "one position at stride 16, too small to export"),
])
def test_cli_bad_flags(tmp_path, args, message):
    result = run_cli(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert leftovers(tmp_path) == []


def test_cli_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(export_cli, ["--size", "32x48", "--out",
                                             str(tmp_path / "file" / "sub")])
    assert result.exit_code == 2 and "cannot create the output folder" in result.output


def test_cli_checkpoint_variant_mismatch(tmp_path):
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, build_student(get_variant(NAME).config), NAME)
    result = run_cli(tmp_path, "--ckpt", str(ckpt), "--variant", "resnet18")
    assert result.exit_code == 2 and "resnet18" in result.output
    assert leftovers(tmp_path) == ["student.pt"]


def test_cli_exports_a_checkpoint_marked_trained(tmp_path):
    """Also the suite's queue-1 export with every gate, both precisions and the K-object
    graphs (test_export.py's cases are all at queue 2): at queue 1 the state passes through
    the step, and each output must still be a tensor of its own."""
    import json

    from ai_edge_litert.interpreter import Interpreter

    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, build_student(get_variant(NAME).config, seed=3), NAME)
    result = run_cli(tmp_path, "--ckpt", str(ckpt), "--queue", "1")
    assert result.exit_code == 0, result.output
    assert "GPU analyzer     compatible" in result.output
    folder = tmp_path / "o"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["trained"] is True and manifest["checkpoint"]["path"] == str(ckpt)
    assert sorted(manifest["precisions"]) == ["fp16", "fp32"]
    # queue 1: the K-object graphs ship without memorize (the memory never changes)
    assert set(manifest["graphs"]) == {"init", "step", "encode", "start", "segment"}
    gates = manifest["gates"]
    assert {"step_parity", "rollout_tflite_fp16", "gpu_parity",
            "rollout_objects_tflite_fp32", "rollout_objects_gpu"} <= set(gates)
    assert all(g["passed"] for g in gates.values()), gates
    for path in sorted(folder.glob("*.tflite")):
        interpreter = Interpreter(model_path=str(path))
        ins = {d["index"] for d in interpreter.get_input_details()}
        outs = {d["index"] for d in interpreter.get_output_details()}
        assert not ins & outs, f"{path.name}: an output is an input tensor"
        for t in interpreter.get_tensor_details():
            assert len(t["shape"]) <= 4 and -1 not in list(t["shape_signature"]), (
                path.name, t["name"])


def test_the_converter_never_rewrites_the_onnx_file_it_is_given(tmp_path):
    """onnx2tf runs onnxsim on its input and writes it back in place; the shipped ONNX
    file, which ONNX Runtime's gates load while the conversion runs, must stay as written
    (a gate once read it half-written)."""
    from mobilevos_deploy.files import sha256

    from .conftest import UnsupportedOps

    path = tmp_path / "control.onnx"
    torch.onnx.export(UnsupportedOps(), (torch.rand(1, 3, 16, 16),), str(path),
                      input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                      do_constant_folding=False)  # leaves onnxsim something to rewrite
    before = sha256(path)
    spec = GraphSpec("control", (TensorSpec("x", (1, 3, 16, 16), "float32", "NCHW"),),
                     (TensorSpec("y", (1, 6), "float32", "B,6"),))
    convert_graphs({"control": (path, spec)}, tmp_path / "work")
    assert sha256(path) == before
    assert sha256(tmp_path / "work" / "control" / "control.onnx") != before  # onnxsim's copy


def _probe_with(student, queue: int, spec, prob_fn=None, value_bug: float = 0.0,
                logit_fn=None, encoded_fn=None):
    """A stand-in runtime: PyTorch fp32's probe whose probability is ``prob_fn``'s (both the
    output and what its memory write encodes, one tensor as in a real runtime), whose
    mask logit is ``logit_fn``'s (a bug before the sigmoid), whose value encoder's fusing
    weights are off by ``value_bug`` (a bug in the memory write), and whose memory write
    encodes ``encoded_fn`` of its probability (a bug: another tensor than it returns)."""
    import copy

    from mobilevos_deploy.model.graphs import graph_module
    from mobilevos_deploy.model.student import ValueEncoder

    module = copy.deepcopy(graph_module(student, queue, "probe"))
    with torch.no_grad():
        module.student.value_encoder.fuse.weight.mul_(1.0 + value_bug)
    if logit_fn is not None:  # on this copy's decoder only
        decoder = module.student.decoder
        decoder.head = lambda features: logit_fn(type(decoder).head(decoder, features))
    prob_fn = prob_fn or (lambda p: p)
    encoder = next(m for m in module.modules() if isinstance(m, ValueEncoder))
    encoded_fn = encoded_fn or (lambda p: p)
    encoder.register_forward_pre_hook(lambda _, args: (
        torch.cat([encoded_fn(prob_fn(args[0][:, :1])), args[0][:, 1:]], dim=1), args[1]))

    def run(inputs):
        with torch.no_grad():
            outs = module(*(torch.from_numpy(inputs[n]) for n in spec.input_names))
        got = {n: o.numpy() for n, o in zip(spec.output_names, outs, strict=True)}
        got["prob"] = prob_fn(torch.from_numpy(got["prob"])).numpy()
        return got

    return run


def test_the_step_is_judged_stage_by_stage_on_the_runtimes_own_inputs(trained):
    """step_parity with ``exact_given_prob``: the logit against the exact step, the sigmoid
    against the float64 sigmoid of the runtime's own logit, the memory write against exact
    arithmetic encoding the runtime's own probability.

    ONNX Runtime's sigmoid is accurate in absolute terms (~1e-7), not relative, and the
    trained value encoder amplifies the background's last bits: at 480x864 that alone put
    ORT's memory values 9.2e-5 from exact arithmetic (limit 1e-4; the joint-trained
    student's 1.28e-4 failed). Here a sigmoid rounded to an absolute 2^-21 stands in at
    64x96: the memory write judged on its own mask is as close as PyTorch's, ten times
    closer than the unconditioned comparison makes it. The negative controls, each a bug
    whose probability stays inside prob's own 1e-4: a 1e-3 error in the value encoder's
    weights, a logit off by 1 where the background is sure, a sigmoid off by 1e-6, a
    memory write that encodes another mask than the step returns; and a probability 2e-4
    off, and a NaN one."""
    from mobilevos_deploy.export.gates.parity import (
        FLOOR_FACTOR,
        SIGMOID_ATOL,
        runtime_errors,
        step_parity,
    )
    from mobilevos_deploy.model.graphs import graph_module, graph_specs
    from mobilevos_deploy.runtime.runners import exact_given_prob, exact_runner, torch_runner

    student, queue = trained.student, 2
    specs = graph_specs(student, queue, 64, 96)
    spec = specs["probe"]
    ref = Reference(student, queue, 64, 96, False)
    given = exact_given_prob(graph_module(student, queue, "probe"), spec)
    # given the exact probability, it is the exact step, bit for bit
    same = given(ref.inputs, ref.exact["prob"])
    exact = exact_runner(graph_module(student, queue, "probe"), spec)(ref.inputs)
    assert all(np.array_equal(same[n], exact[n]) for n in spec.output_names)
    # another probability moves the memory write only
    moved = given(ref.inputs, np.clip(ref.exact["prob"] + 1e-3, 0.0, 1.0))
    assert not np.array_equal(moved["next_mem_values"], exact["next_mem_values"])
    assert all(np.array_equal(moved[n], exact[n]) for n in spec.output_names
               if n != "next_mem_values")

    def gate(runtime, staged: bool = True):
        return step_parity(spec, lambda _: ref.expected, {"rt": runtime}, ref.inputs,
                           exact=ref.exact, exact_given_prob=given if staged else None)

    def failed_on(result) -> set[str]:
        return {row.split()[1] for row in result.offending}

    quantum = 2.0 ** -21  # ONNX Runtime's sigmoid: 1.4e-7 at worst
    coarse = _probe_with(student, queue, spec, lambda p: torch.round(p / quantum) * quantum)
    plain, judged = gate(coarse, staged=False), gate(coarse)
    assert judged.passed, judged.offending
    assert judged.figures["rt.prob"] < 1e-5 and judged.figures["rt.sigmoid"] < SIGMOID_ATOL
    values = judged.figures["rt.next_mem_values"]
    assert plain.figures["rt.next_mem_values"] > 10 * values
    assert judged.figures["prob_propagated.rt.next_mem_values"] > 10 * values
    # the floor is PyTorch fp32's own memory write, judged on its own mask the same way
    pt_values = ref.expected["next_mem_values"]
    own = given(ref.inputs, ref.expected["prob"])["next_mem_values"]
    floor = judged.figures["pytorch_fp32_vs_fp64.next_mem_values"]
    assert floor == pytest.approx(float(np.max(np.abs(pt_values - own) / (1 + np.abs(own)))))
    assert values < FLOOR_FACTOR * floor
    assert {k for k in judged.figures if k.startswith("prob_propagated.")} == {
        "prob_propagated.pytorch_fp32.next_mem_values", "prob_propagated.rt.next_mem_values"}
    # what mvos-export's summary calls the worst: the runtime's own errors only
    assert sorted(runtime_errors(judged.figures)) == sorted(
        v for k, v in judged.figures.items() if k.startswith("rt."))

    # the bugs the gate exists for
    bug = gate(_probe_with(student, queue, spec, value_bug=1e-3))
    assert failed_on(bug) == {"next_mem_values"} and "given its own prob" in bug.offending[0]
    assert (ref.exact["logit"] < -11).mean() > 0.02  # the control below changes something
    sure = _probe_with(student, queue, spec, logit_fn=lambda x: x + (x < -11).float())
    bug = gate(sure)
    assert bug.figures["rt.prob"] < 1e-4 and failed_on(bug) == {"logit"}
    off = _probe_with(student, queue, spec, lambda p: (p + 1e-6).clamp(max=1.0))
    bug = gate(off)
    assert bug.figures["rt.prob"] < 1e-4 and failed_on(bug) == {"prob"}
    assert "sigmoid of its own logit" in bug.offending[0]
    bug = gate(_probe_with(student, queue, spec, lambda p: (p + 2e-4).clamp(max=1.0)))
    assert failed_on(bug) >= {"prob"} and any(
        row.split()[1] == "prob" and "max abs 0.0002" in row for row in bug.offending)
    elsewhere = _probe_with(student, queue, spec, encoded_fn=lambda p: (p + 1e-3).clamp(max=1))
    bug = gate(elsewhere)
    assert failed_on(bug) == {"next_mem_values"} and bug.figures["rt.prob"] < 1e-5
    nan = torch_runner(graph_module(student, queue, "probe"), spec)
    bug = gate(lambda inputs: {**nan(inputs), "prob": np.full_like(ref.exact["prob"],
                                                                   np.nan, np.float32)})
    assert failed_on(bug) == {"prob"} and "non-finite" in bug.offending[0]

    # queue 1 writes no memory: the exact step whatever the probability
    specs1 = graph_specs(student, 1, 64, 96)
    inputs1 = Reference(student, 1, 64, 96, False).inputs
    one = exact_given_prob(graph_module(student, 1, "probe"), specs1["probe"])
    exact1 = exact_runner(graph_module(student, 1, "probe"), specs1["probe"])(inputs1)
    zero = one(inputs1, np.zeros_like(exact1["prob"]))
    assert all(np.array_equal(zero[n], exact1[n]) for n in specs1["probe"].output_names)


def test_step_parity_limit_follows_pytorch_fp32s_own_error_only_where_it_is_larger():
    """With an exact (float64) reference a tensor's limit is 1e-4, or FLOOR_FACTOR times
    PyTorch fp32's error against it where that is larger. The error of a runtime is
    measured against the exact values."""
    from mobilevos_deploy.export.gates.parity import FLOOR_FACTOR, step_parity

    spec = GraphSpec("g", (TensorSpec("x", (1, 4), "float32", "B,C"),),
                     (TensorSpec("readout", (1, 1000), "float32", "B,C"),))
    rng = np.random.default_rng(0)
    exact = {"readout": rng.normal(size=(1, 1000))}
    floor = 3e-4  # PyTorch fp32's own relative error here, as on trained weights at 480x864

    def off(rel: float):
        return lambda _: {"readout": exact["readout"] + rel * (1 + np.abs(exact["readout"]))}

    def gate(runtime_err: float, torch_err: float):
        return step_parity(spec, off(torch_err), {"rt": off(runtime_err)}, {}, exact=exact)

    assert gate(0.9 * FLOOR_FACTOR * floor, floor).passed
    failed = gate(1.1 * FLOOR_FACTOR * floor, floor)
    assert not failed.passed and "vs fp64" in failed.offending[0]
    # where PyTorch fp32 is accurate, the fixed 1e-4 holds as before
    assert gate(0.9e-4, 1e-7).passed and not gate(1.1e-4, 1e-7).passed
    figures = gate(0.9e-4, 1e-7).figures
    assert figures["pytorch_fp32_vs_fp64.readout"] == pytest.approx(1e-7)


# --- the dependence and K-object parity gates, on their own -----------------------------------

def _memoryless(student):
    """A copy of ``student`` whose read-out returns zeros: its masks ignore the memory."""
    blind = copy.deepcopy(student)
    blind.readout.forward = lambda mem_key, mem_value, valid, query: torch.zeros(
        query.shape[0], mem_value.shape[1], *query.shape[2:])
    return blind


def test_dependence_gates_fail_a_network_that_ignores_its_memory(trained):
    """memory_dependence and objects_dependence exist so that the parity gates could see a
    memory bug at all: the trained student passes them, the same student with a read-out
    that returns zeros (no memory bug could show in its masks) fails both."""
    from mobilevos_deploy.export.gates.cpu import memory_dependence, objects_dependence

    ref = Reference(trained.student, 2, 64, 96, True)
    assert memory_dependence(ref).passed and objects_dependence(ref).passed
    blind = Reference(_memoryless(trained.student), 2, 64, 96, True)
    for gate in (memory_dependence(blind), objects_dependence(blind)):
        assert not gate.passed and "zeroing mem_values" in gate.offending[0], gate.figures


def test_objects_parity_fails_a_graph_off_by_a_conversion_sized_error(trained):
    """objects_parity on its own: PyTorch's own graphs pass; segment's probability 2e-4 off,
    or memorize's values 1e-3 off, fail on the very graph and tensor."""
    from mobilevos_deploy.export.gates.cpu import objects_parity

    ref = Reference(trained.student, 2, 64, 96, True)
    graphs = tuple(ref.objects.inputs)
    assert graphs == ("encode", "start", "segment", "memorize")
    own = {g: ref.pytorch[g] for g in graphs}
    assert objects_parity(ref, {"rt": own}).passed

    def off(graph, tensor, fn):
        run = dict(own)
        run[graph] = lambda inputs: {**own[graph](inputs),
                                     tensor: fn(own[graph](inputs)[tensor])}
        gate = objects_parity(ref, {"rt": run})
        assert not gate.passed
        return {tuple(row.split()[:3]) for row in gate.offending}

    assert off("segment", "prob", lambda p: np.clip(p + 2e-4, 0, 1)) == {
        ("segment", "rt", "prob")}
    assert off("memorize", "next_mem_values", lambda v: v * (1 + 1e-3)) == {
        ("memorize", "rt", "next_mem_values")}
