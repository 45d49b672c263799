"""The one TFLite model per precision: graphs merged as signatures over shared weights, its
size against the student's weights, the analyzer on several subgraphs, the GPU-buffer gate
and the read-out tiled over the query axis that keeps it within a phone's buffers."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.export.build.merge import extract_graph, merge_models, signature_keys
from mobilevos_deploy.export.gates.analyzer import parse_report
from mobilevos_deploy.export.gates.gpu import BufferLimit, buffer_gate
from mobilevos_deploy.model.graphs import shipped_graphs, tflite_file
from mobilevos_deploy.nn.readout import MemoryReadout, query_tiles
from mobilevos_deploy.runtime import gpu as gpu_run

from .conftest import TRAINED, seeded

NAME = "mobilenetv2-noaspp"


def _buffers(path):
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(path.read_bytes(), 0))
    return model, [bytes(np.asarray(b.data, np.uint8)) for b in model.buffers
                   if b.data is not None and len(b.data)]


def test_the_export_ships_one_model_per_precision_with_every_graph(exports):
    result = exports(TRAINED, 2)
    graphs = list(shipped_graphs(2))
    tflite = sorted(p.name for p in result.folder.glob("*.tflite"))
    assert tflite == ["model_fp16.tflite", "model_fp32.tflite"]
    for name in tflite:
        assert signature_keys(result.folder / name) == graphs
        assert result.manifest["models"][name]["signatures"] == graphs
        _, data = _buffers(result.folder / name)
        # every weight stored once: no two constant buffers with the same bytes
        digests = [hashlib.sha256(d).digest() for d in data]
        assert len(digests) == len(set(digests))


def test_the_fp16_model_is_about_one_copy_of_the_weights(exports, trained):
    """The target: the fp16 model at most 1.15x the student's weights stored as fp16. Its
    six graphs used to be six files, each with its own weights (3.8x in all)."""
    result = exports(TRAINED, 2)
    entry = result.manifest["models"]["model_fp16.tflite"]
    weights = 2 * sum(p.numel() for p in trained.student.parameters())
    size = (result.folder / "model_fp16.tflite").stat().st_size
    assert entry["bytes"] == size
    assert entry["vs_fp16_weights"] == pytest.approx(size / weights)
    assert size <= 1.15 * weights, f"{size} bytes for {weights} bytes of fp16 weights"


def test_merged_signatures_compute_what_the_one_graph_files_did(exports, tmp_path):
    """Merging is bookkeeping: each signature of the merged model gives bit for bit what
    its own one-graph file gives; extract_graph undoes the merge for one graph."""
    from ai_edge_litert.interpreter import Interpreter

    folder = exports(TRAINED, 2).folder
    model = folder / tflite_file("fp32")
    manifest = json.loads((folder / "manifest.json").read_text())
    merged = Interpreter(model_path=str(model), num_threads=2)
    rng = np.random.default_rng(0)
    files = {}
    for graph in ("init", "step", "segment"):
        files[graph] = tmp_path / f"{graph}.tflite"
        files[graph].write_bytes(extract_graph(model.read_bytes(), graph))
        one = Interpreter(model_path=str(files[graph]), num_threads=2)
        assert list(one.get_signature_list()) == [graph]
        feeds = {t["name"]: rng.random(t["tflite"]["shape"], dtype=np.float32)
                 for t in manifest["graphs"][graph]["inputs"]}
        a = one.get_signature_runner(graph)(**feeds)
        b = merged.get_signature_runner(graph)(**feeds)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # merged again from the extracted graphs: the same signatures, weights stored once
    again = tmp_path / "again.tflite"
    again.write_bytes(merge_models(files))
    assert signature_keys(again) == ["init", "step", "segment"]
    assert again.stat().st_size < sum(f.stat().st_size for f in files.values())
    with pytest.raises(ValueError, match="no signature 'nope'"):
        extract_graph(model.read_bytes(), "nope")


# --- the analyzer on a model of several subgraphs -----------------------------------------

TWO_SUBGRAPHS = """Subgraph#0 init(T#0) -> [T#3]
  Op#0 DEQUANTIZE(T#1) -> [T#2]
  Op#1 CONV_2D(T#0, T#2, T#4) -> [T#3]
GPU COMPATIBILITY WARNING: Expected 1 or 2 input tensor(s), but node has 3 runtime inputs.
GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 \
on TFLite runtime version 2.17.1

Tensors of Subgraph#0
  T#0(x) shape:[1, 8, 8, 3], type:FLOAT32
  T#1(w) shape:[4, 3, 3, 3], type:FLOAT16 RO 216 bytes, buffer: 2, data:[??]
  T#4(b) shape:[4], type:FLOAT32 RO 16 bytes, buffer: 3, data:[??]

Subgraph#1 step(T#1_0) -> [T#1_3]
  Op#0 CONV_2D(T#1_0, T#1_2, T#1_5) -> [T#1_3]
GPU COMPATIBILITY WARNING: Expected 1 or 2 input tensor(s), but node has 3 runtime inputs.
  Op#1 TOPK_V2(T#1_3, T#1_6) -> [T#1_7]
GPU COMPATIBILITY WARNING: Not supported op TOPK_V2
GPU COMPATIBILITY WARNING: Subgraph#1 has GPU delegate compatibility issues at nodes 0, 1 \
on TFLite runtime version 2.17.1

Tensors of Subgraph#1
  T#1_0(x) shape:[1, 8, 8, 3], type:FLOAT32
  T#1_2(w) shape:[4, 3, 3, 3], type:FLOAT32
  T#1_5(b) shape:[4], type:FLOAT32
"""


def test_analyzer_reads_each_subgraph_apart():
    """Op and tensor numbers restart in every subgraph (``T#1_2`` is tensor 2 of subgraph
    1): init's op 1 is the fp16-weight pattern (T#2 is a dequantized fp16 constant there);
    step's op 0 reads T#1_2, a runtime tensor of its own subgraph, and stays flagged (a
    parser that ignored subgraphs would take it for init's T#2 and exempt it); step's
    TOPK_V2 is named with its signature."""
    report = parse_report("model.tflite", TWO_SUBGRAPHS)
    assert report.exempt_fp16_dequantize == 1
    assert [(f.subgraph, f.index, f.op) for f in report.flagged] == [
        ("step", 0, "CONV_2D"), ("step", 1, "TOPK_V2")]
    assert report.flagged[1].where() == "step op #1"


# --- GPU buffers ------------------------------------------------------------------------------

def test_buffer_gate_fails_a_tensor_beyond_the_devices_buffer(tmp_path):
    """A 256 MiB tensor against the s22 profile's 128 MiB fails and names the tensor; the
    same file against a 512 MiB limit passes."""
    path = tmp_path / "big.tflite"
    path.write_bytes(gpu_run.add_model((1, 1, 2**24, 4)))
    limit = BufferLimit(128 * 2**20, "test", "s22")
    gate = buffer_gate([path], limit)
    assert not gate.passed
    assert "256.0 MiB" in gate.offending[0] and "add/z" in gate.offending[0]
    assert buffer_gate([path], BufferLimit(512 * 2**20, "test")).passed


def test_export_records_the_largest_tensor_of_every_signature(exports):
    gate = exports(TRAINED, 2).manifest["gates"]["gpu_buffers"]
    assert gate["passed"] and gate["limit_bytes"] == 128 * 2**20
    for name in ("model_fp32.tflite", "model_fp16.tflite"):
        size, tensor = gpu_run.largest_tensor(exports(TRAINED, 2).folder / name)
        assert gate[f"{name}.largest_bytes"] == size > 0
        assert tensor.split("/")[0] in shipped_graphs(2)


@pytest.mark.parametrize(("queue", "tiles"), [(1, 1), (2, 1), (12, 1), (13, 2), (20, 2)])
def test_read_out_tiles_keep_the_affinity_within_128_mib_at_480x864(queue, tiles):
    """At 480x864 (30 x 54 positions at stride 16) the affinity of queue 20 is 200 MiB; the
    query axis is cut into as few tiles as fit, and none where one fits."""
    p, n = 30 * 54, queue * 30 * 54
    got, tile = query_tiles(p, n, {64, 65, 96, n}, MemoryReadout.MAX_TENSOR_BYTES)
    assert got == tiles and got * tile >= p
    assert tile * n * 4 <= MemoryReadout.MAX_TENSOR_BYTES
    assert tile not in {64, 65, 96, n} and got * tile not in {64, 65, 96, n}


def test_tiled_read_out_equals_the_whole_one():
    """Each tile's softmax runs over the memory axis within its own rows: tiling changes
    no row. Three tiles (a limit a third of the affinity) against none, in float64."""
    torch.manual_seed(0)
    keys, values = torch.randn(1, 64, 96, dtype=torch.float64), torch.randn(
        1, 96, 96, dtype=torch.float64)
    valid = torch.ones(1, 1, 96, dtype=torch.float64)
    valid[..., 80:] = 0
    query = torch.randn(1, 64, 6, 8, dtype=torch.float64)
    whole = MemoryReadout(64)(keys, values, valid, query)
    tiled_module = MemoryReadout(64, max_tensor_bytes=48 * 97 * 4 // 3)
    tiles, _ = query_tiles(48, 97, {64, 65, 96, 97}, tiled_module.max_tensor_bytes)
    assert tiles == 3
    tiled = tiled_module(keys, values, valid, query)
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-12)


def test_a_tiled_read_out_exports_and_passes_every_gate(students, tmp_path):
    """The converters see a tiled graph only at large sizes; here a small limit cuts the
    32x96 export's read-out into two tiles, and every gate (ONNX Runtime, TFLite fp32 and
    fp16, the GPU accelerator) runs on it: tiles add STRIDED_SLICE and CONCATENATION,
    which onnx2tf must lay out right and the GPU must take."""
    student = copy.deepcopy(students[NAME])
    height, width = 32, 96
    p = (height // 16) * (width // 16)  # 12 query positions, 24 in memory
    student.readout.max_tensor_bytes = (p // 2) * (2 * p) * 4
    assert query_tiles(p, 2 * p, {64, 65, 96, 2 * p}, student.readout.max_tensor_bytes
                       ) == (2, p // 2)
    result = export_model(seeded(student, NAME), 2, height, width, tmp_path / "tiled",
                          objects=False)
    assert all(g["passed"] for g in result.manifest["gates"].values())
    assert result.manifest["gpu_run"]["verdict"] == "fully accelerated"


def test_fp16_weights_pass_writes_what_tensorflows_converter_writes(exports, tmp_path):
    """The litert-torch path's fp16 model comes from fp16.py; run on onnx2tf's fp32 model it
    gives TensorFlow's own fp16 model back: within 1 % of its bytes, every weight a
    DEQUANTIZE'd float16 constant, and the same step outputs (the same rounding)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilevos_deploy.export.build.fp16 import fp16_weights

    folder = exports(TRAINED, 2).folder
    ours = tmp_path / "ours.tflite"
    ours.write_bytes(fp16_weights((folder / "model_fp32.tflite").read_bytes()))
    theirs = folder / "model_fp16.tflite"
    assert abs(ours.stat().st_size / theirs.stat().st_size - 1) < 0.01
    model, _ = _buffers(ours)
    float32_constants = [t for g in model.subgraphs for t in g.tensors
                         if t.type == 0 and t.buffer and model.buffers[t.buffer].data is not None
                         and len(model.buffers[t.buffer].data)]
    assert not float32_constants
    manifest = exports(TRAINED, 2).manifest
    rng = np.random.default_rng(0)
    feeds = {t["name"]: rng.random(t["tflite"]["shape"], dtype=np.float32)
             for t in manifest["graphs"]["step"]["inputs"]}
    a = Interpreter(model_path=str(ours)).get_signature_runner("step")(**feeds)
    b = Interpreter(model_path=str(theirs)).get_signature_runner("step")(**feeds)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5
