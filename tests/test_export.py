"""mvos-export on CPU TFLite: every variant at 64x96 at queue 2, the default variant also
at queue 1, both precisions.

Each (variant, queue) is exported once per session (real onnx2tf + TensorFlow conversion,
real ONNX Runtime and LiteRT), and the tests read what that export wrote. Queue 1 runs for
one variant only (each export costs 30-50 s of the suite, which must stay under 15
minutes): the queue's logic is the same code for every variant; the padding that keeps
the read-out's axes distinct is computed from each export's own sizes, and the case where
they coincide is exported and gated in tests/test_export_gates.py. A queue longer than 2
is exported with every gate there too (queue 4 at 64x64, fp32 files), so the queue-5
export this module also ran was dropped when the fp16 gates grew (fresh-clone suite 14.9
and 15.7 min with it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from mobilevos_deploy.export.api import export_model, shipped_graphs
from mobilevos_deploy.export.artifact.manifest import sha256
from mobilevos_deploy.export.gates.parity import FLOOR_FACTOR, SIGMOID_ATOL, nchw_clip
from mobilevos_deploy.model.checkpoint import DEFAULT_CHECKPOINT, DEFAULT_NAME
from mobilevos_deploy.model.config import DEFAULT_VARIANT as NOASPP
from mobilevos_deploy.model.config import StudentConfig
from mobilevos_deploy.model.graphs import config_specs, multi_graphs

from .conftest import EXPORT_HEIGHT as HEIGHT
from .conftest import EXPORT_WIDTH as WIDTH
from .conftest import TRAINED, VARIANTS, seeded, ships_objects

# the seeded students and the shipped trained student at the default queue; queue 1 with
# every gate, both precisions and the K-object graphs is test_export_gates.py's CLI test
CASES = [(v, 2) for v in VARIANTS] + [(TRAINED, 2)]


def _specs(result):
    m = result.manifest
    return config_specs(StudentConfig.from_dict(m["config"]), m["queue"], *m["size"])


@pytest.mark.parametrize(("variant", "queue"), CASES)
def test_every_gate_passes_with_figures_in_the_manifest(exports, variant, queue):
    result = exports(variant, queue)
    gates = result.manifest["gates"]
    expected = {"step_parity", "memory_dependence", "rollout_onnx", "rollout_tflite_fp32",
                "rollout_tflite_fp16", "rollout_fp16_compute", "gpu_parity", "gpu_buffers"}
    if result.manifest["gpu_run"]["fp16_compute_available"]:
        expected.add("rollout_gpu_fp16")  # only where the Vulkan device computes in fp16
    graphs = shipped_graphs(queue, ships_objects(variant, queue))
    assert set(result.manifest["graphs"]) == set(graphs)
    multi = multi_graphs(queue) if "encode" in graphs else ()
    if multi:
        expected |= {"objects_parity", "objects_dependence", "rollout_objects_onnx",
                     "rollout_objects_tflite_fp32", "rollout_objects_tflite_fp16",
                     "rollout_objects_gpu"}
    assert set(gates) == expected
    assert all(g["passed"] for g in gates.values())
    parity = gates["step_parity"]
    for runtime in ("onnx", "tflite32"):  # the read-out and every state tensor are checked
        for name in ("prob", "next_mem_keys", "next_mem_values", "next_mem_valid", "readout",
                     "logit"):
            limit = max(1e-4, FLOOR_FACTOR * parity[f"pytorch_fp32_vs_fp64.{name}"])
            assert 0.0 <= parity[f"{runtime}.{name}"] <= limit
        assert parity[f"{runtime}.sigmoid"] <= SIGMOID_ATOL
    assert gates["memory_dependence"]["max_prob_change"] > 1e-2
    assert gates["rollout_tflite_fp32"]["min_iou"] >= 0.999
    assert gates["rollout_tflite_fp32"]["max_prob_err"] <= 1e-3
    assert gates["rollout_tflite_fp16"]["min_iou"] >= 0.99
    assert gates["rollout_fp16_compute"]["min_iou"] >= 0.99
    if multi:  # every output of every K-object graph, both runtimes
        objects = gates["objects_parity"]
        specs = _specs(result)
        for graph in multi:
            for runtime in ("onnx", "tflite32"):
                for name in specs[graph].output_names:
                    limit = max(1e-4, FLOOR_FACTOR * objects[
                        f"{graph}.pytorch_fp32_vs_fp64.{name}"])
                    assert 0.0 <= objects[f"{graph}.{runtime}.{name}"] <= limit
        assert gates["objects_dependence"]["segment_max_prob_change"] > 1e-2
        for name in ("rollout_objects_onnx", "rollout_objects_tflite_fp32",
                     "rollout_objects_gpu"):
            assert gates[name]["min_iou"] >= 0.999 and gates[name]["max_prob_err"] <= 1e-3
            assert gates[name]["closed_loop_min_iou"] >= 0.999
    assert result.manifest["gpu_check"]["verdict"] == "compatible"
    # LiteRT's GPU accelerator ran every shipped file, whole, at the step-parity limits
    run = result.manifest["gpu_run"]
    assert run["verdict"] == "fully accelerated" and run["adapter"]["name"]
    assert set(run["files"]) == {"model_fp32.tflite", "model_fp16.tflite"}
    for name, model in run["files"].items():
        assert model["fully_accelerated"] and not model["unsupported"]
        assert model["largest_tensor_bytes"] > 0
        assert list(model["signatures"]) == list(graphs)
        for graph, entry in model["signatures"].items():
            if name == "model_fp16.tflite" and run["software_device"]:
                assert entry["ran"].startswith("no")  # compiled; its fp32 twin ran
                continue
            assert entry["ran"] == "yes"
            want = set(_specs(result)[graph].output_names)
            assert set(entry["errors"]) == want
            assert all(0.0 <= e <= 1e-4 for e in entry["errors"].values()), (graph, entry)
    assert not result.warnings


def test_the_objects_rollout_gate_sees_a_dropped_other_objects_channel(exports, students):
    """Negative control of the K-object gates: the exported ONNX graphs with memorize fed a
    zero ``others`` (a conversion that lost the input) fail rollout_objects against
    PyTorch; the graphs as exported pass."""
    from mobilevos_deploy.export.gates.cpu import objects_rollout
    from mobilevos_deploy.export.gates.reference import Reference
    from mobilevos_deploy.model.graphs import graph_specs
    from mobilevos_deploy.runtime.runners import onnx_runner

    folder = exports(NOASPP, 2).folder
    student = students[NOASPP]
    specs = graph_specs(student, 2, HEIGHT, WIDTH)
    ref = Reference(student, 2, HEIGHT, WIDTH, True)
    objects = ref.objects
    assert (objects.masks0.reshape(2, -1).sum(1) > 0).all()  # both objects in frame 0
    run = {g: onnx_runner(folder / f"{g}.onnx", specs[g]) for g in multi_graphs(2)}
    assert objects_rollout("ok", ref, run, False).passed
    memorize = run["memorize"]
    run["memorize"] = lambda inputs: memorize(dict(inputs,
                                                   others=np.zeros_like(inputs["others"])))
    gate = objects_rollout("dropped", ref, run, False)
    assert not gate.passed, gate.figures


@pytest.mark.parametrize(("variant", "queue"), CASES)
def test_manifest_lists_every_file_with_its_hash(exports, variant, queue):
    result = exports(variant, queue)
    on_disk = json.loads((result.folder / "manifest.json").read_text())
    assert on_disk == result.manifest
    assert on_disk["queue"] == queue
    if variant == TRAINED:  # the shipped student is named, with the hash of its file
        ckpt = on_disk["checkpoint"]
        assert on_disk["trained"] is True and ckpt["name"] == DEFAULT_NAME
        assert ckpt["sha256"] == sha256(DEFAULT_CHECKPOINT) and on_disk["variant"] == NOASPP
    else:
        assert on_disk["trained"] is False and on_disk["checkpoint"] is None
    files = sorted(p.name for p in result.folder.iterdir() if p.name != "manifest.json")
    graphs = shipped_graphs(queue, ships_objects(variant, queue))
    assert files == sorted(on_disk["files"]) == sorted(
        [f"{g}.onnx" for g in graphs] + ["model_fp16.tflite", "model_fp32.tflite"])
    for name, entry in on_disk["files"].items():
        path = result.folder / name
        assert entry == {"sha256": sha256(path), "bytes": path.stat().st_size}
    assert not [p for p in result.folder.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("variant", "queue"), CASES)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_step_outputs_feed_back_as_its_inputs(exports, variant, queue, precision):
    """Same names (via the manifest's feeds), order, shapes, dtypes and layout."""
    result = exports(variant, queue)
    interpreter = Interpreter(model_path=str(result.folder / f"model_{precision}.tflite"))
    sig = interpreter.get_signature_list()["step"]
    runner = interpreter.get_signature_runner("step")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    feeds = result.manifest["feeds"]
    assert list(feeds.values()) == ["mem_keys", "mem_values", "mem_valid"]
    for out_name, in_name in feeds.items():
        assert list(outs[out_name]["shape"]) == list(ins[in_name]["shape"])
        assert outs[out_name]["dtype"] == ins[in_name]["dtype"] == np.float32
    assert set(sig["inputs"]) == {"frame", *feeds.values()}
    assert set(sig["outputs"]) == {"prob", *feeds}
    # the signature lists them in the declared order; every output is a tensor of its own
    # (an output that is an input breaks LiteRT's GPU accelerator; at Q = 1, where the state
    # passes through, the CLI test of test_export_gates.py checks it)
    declared = result.manifest["graphs"]["step"]
    assert set(sig["inputs"]) == {t["name"] for t in declared["inputs"]}
    assert set(sig["outputs"]) == {t["name"] for t in declared["outputs"]}
    assert not {d["index"] for d in ins.values()} & {d["index"] for d in outs.values()}


@pytest.mark.parametrize(("variant", "queue"), CASES)
def test_every_tensor_is_static_batch_1_and_at_most_4d(exports, variant, queue):
    result = exports(variant, queue)
    for path in result.folder.glob("*.tflite"):
        interpreter = Interpreter(model_path=str(path))
        for t in interpreter.get_tensor_details():
            shape = list(t["shape"])
            assert len(shape) <= 4, (path.name, t["name"], shape)
            assert -1 not in list(t["shape_signature"]), (path.name, t["name"])
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not ops & {"TOPK_V2", "BROADCAST_TO", "GATHER", "GATHER_ND", "WHERE",
                          "ARG_MAX", "CUSTOM", "FLEX_DELEGATE"}, (path.name, ops)
        assert not any(op.startswith("Flex") for op in ops)


@pytest.mark.parametrize("variant", [*VARIANTS, TRAINED])
def test_state_loop_runs_from_the_manifest_alone(exports, variant):
    """The app's loop `state = step(frame, state)` using only the manifest, on fp16."""
    result = exports(variant, 2)
    m = result.manifest
    model = Interpreter(model_path=str(result.folder / "model_fp16.tflite"))
    init_run = model.get_signature_runner("init")
    step_run = model.get_signature_runner("step")
    frames, masks = nchw_clip(6, HEIGHT, WIDTH, seed=3)
    nhwc = frames.transpose(0, 2, 3, 1)
    state = init_run(frame=nhwc[:1], mask=masks[:1, :, :, None])
    for t in range(1, 6):
        out = step_run(frame=nhwc[t : t + 1], **{k: state[k] for k in m["feeds"].values()})
        assert out["prob"].shape == (1, HEIGHT, WIDTH, 1) and np.isfinite(out["prob"]).all()
        state = {m["feeds"][k]: v for k, v in out.items() if k in m["feeds"]}
    assert state["mem_valid"].min() == 1.0  # both slots filled after 5 steps


def test_rerun_replaces_the_folder_whole(exports, students, tmp_path, monkeypatch):
    """Staging and replacement only: the folder holds an earlier export (a copy of the
    session's, with the K-object graphs and both precisions), and an export of one
    precision, single-object, replaces it whole. The gates (tested on every export above)
    are switched off here (suite time)."""
    import shutil

    from mobilevos_deploy.export import api

    monkeypatch.setattr(api, "_onnx_gates", lambda *a: [api.GateResult("none", True)])
    monkeypatch.setattr(api, "_tflite_gates", lambda *a: [])
    monkeypatch.setattr(api, "gpu_run_gate", lambda *a: ([], {"verdict": "not run"}))
    monkeypatch.setattr(api, "gpu_delegate_gate", lambda *a: (None, {"verdict": "not run"}))
    folder = tmp_path / "out"
    shutil.copytree(exports(NOASPP, 2).folder, folder)
    assert (folder / "memorize.onnx").exists()
    # the older export's files go with it (a user's file would be refused instead:
    # test_hostile.py); given through a symlink, the folder it points to is replaced and
    # the link stays
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    second = export_model(seeded(students[NOASPP], NOASPP), 1, 32, 48, link,
                          precisions=["fp16"], objects=False)
    assert second.folder == folder.resolve() and link.is_symlink()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["init.onnx", "manifest.json", "model_fp16.tflite", "step.onnx"]
    assert second.manifest["precisions"] == ["fp16"] and second.manifest["queue"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "out"]


def test_queue_1_step_has_no_value_encoder(students, tmp_path):
    """At Q = 1 the memory never changes, so the step graph computes no value."""
    import onnx

    from mobilevos_deploy.export.build.onnx import export_onnx
    from mobilevos_deploy.model.graphs import graph_module, graph_specs

    student = students["mobilenetv2"]
    convs = {}
    for queue in (1, 2):
        spec = graph_specs(student, queue, HEIGHT, WIDTH)["step"]
        export_onnx(graph_module(student, queue, "step"), spec, tmp_path / f"q{queue}.onnx")
        model = onnx.load(str(tmp_path / f"q{queue}.onnx"))
        convs[queue] = sum(n.op_type == "Conv" for n in model.graph.node)
    n_value = sum(1 for m in student.value_encoder.modules() if m.__class__.__name__ == "Conv2d")
    assert n_value > 0
    assert convs[2] - convs[1] == n_value


def test_a_file_that_fails_its_io_or_final_check_ends_the_export_like_a_gate(students,
                                                                            tmp_path,
                                                                            monkeypatch):
    """check_io (a converted file whose I/O is not the graph declared) and verify_written
    (a written file that does not load, allocate and invoke) end the export with a
    GateError naming what is wrong, exit 2 from the CLI, and nothing written. The other
    gates are switched off here (suite time)."""
    from mobilevos_deploy.export import api

    monkeypatch.setattr(api, "_onnx_gates", lambda *a: [api.GateResult("none", True)])
    monkeypatch.setattr(api, "_tflite_gates", lambda *a: [])
    monkeypatch.setattr(api, "gpu_run_gate", lambda *a: ([], {"verdict": "not run"}))
    monkeypatch.setattr(api, "gpu_delegate_gate", lambda *a: (None, {"verdict": "not run"}))

    def wrong_io(path, spec):
        raise AssertionError(f"{path.name}: no output named 'prob'")

    def broken(folder, specs, graphs):
        raise RuntimeError("model_fp32.tflite: step returned no ['prob']")

    for name, fake, said in (("check_io", wrong_io, "not the graphs declared"),
                             ("verify_written", broken, "failed its final check")):
        with monkeypatch.context() as patch:
            patch.setattr(api, name, fake)
            with pytest.raises(api.GateError, match=said) as err:
                export_model(seeded(students[NOASPP], NOASPP), 1, 32, 48, tmp_path / "x",
                             precisions=["fp32"], objects=False)
        assert "nothing was written" in str(err.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == []
