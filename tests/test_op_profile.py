"""The host op profiler (bench/op_profile.py) times what the whole graph runs: its one-op
models read weights as constants in both precisions, and the fp16 ops' times add up to
their graph as the fp32 ones do. An fp16 file's weights are DEQUANTIZE outputs; cut out as
they stood, they became variable inputs and the op sum came out about 4x (1 thread) to 7x
(2 threads) the whole graph at 64x96, 7x at 480x864."""

from __future__ import annotations

import statistics

import pytest

from mobilevos_deploy.bench.op_profile import one_op_models, profile_ops

VARIANT, QUEUE = "mobilenetv2-noaspp", 2
PRECISIONS = ["fp32", "fp16"]


@pytest.fixture(scope="module")
def step(exports):
    folder = exports(VARIANT, QUEUE).folder
    return {p: folder / f"step_{p}.tflite" for p in PRECISIONS}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_cut_out_convolution_reads_its_weights_as_constants(step, precision):
    from ai_edge_litert.interpreter import Interpreter

    convs = [(index, content) for index, name, _, content in one_op_models(
        step[precision].read_bytes()) if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs
    for index, content in convs:
        inputs = Interpreter(model_content=content).get_input_details()
        assert len(inputs) == 1, f"op {index}: variable inputs {[d['shape'] for d in inputs]}"


def _ratio(path) -> tuple[float, list[float]]:
    """Median over five profiles of (sum of the ops timed alone) / (whole graph)."""
    ratios = []
    for _ in range(5):
        profile = profile_ops(path, threads=1, runs=30)
        ratios.append(sum(t.ms for t in profile.ops) / profile.whole_ms)
    return statistics.median(ratios), ratios


def test_fp16_ops_add_up_to_their_graph_as_fp32_ops_do(step, monkeypatch):
    """The fp16 profile against the fp32 one, side by side in one run.

    How far the op sum lies from the whole graph depends on the CPU: each op timed alone
    loses the cache reuse and the fusions of the whole graph. At 64x96 the fp32 ratio was
    1.0-1.1 on an Intel Skylake-X and 1.22 on an AMD EPYC, with the profiler right, so the
    earlier absolute bound (0.85-1.15 for each precision) was a statement about the CPU.
    The bug this test exists for is precision-specific: fp16 weights cut out as variable
    inputs made the fp16 op sum 4-7x its graph while fp32 was right. So the fp16 ratio is
    held to within 15 % of the fp32 ratio, and the negative control (the fold of fp16
    weights switched off, i.e. that bug) must fail the same bound. A bug common to both
    precisions (weights read as inputs) is what the structural test above catches.
    One thread: with two on this 2-core machine shared with other work, a preempted
    thread stalls the whole graph's median but not each op's; five profiles each.
    """
    import mobilevos_deploy.bench.op_profile as op_profile

    fp32, fp32_all = _ratio(step["fp32"])
    fp16, fp16_all = _ratio(step["fp16"])
    seen = f"fp32 {[round(r, 2) for r in fp32_all]}, fp16 {[round(r, 2) for r in fp16_all]}"
    assert 0.85 <= fp16 / fp32 <= 1.15, f"op sum / whole graph: {seen}"
    monkeypatch.setattr(op_profile, "_fp16_weights", lambda fb, model: {})
    broken = profile_ops(step["fp16"], threads=1, runs=30)  # one profile: it is ~4x off
    ratio = sum(t.ms for t in broken.ops) / broken.whole_ms
    assert not 0.85 <= ratio / fp32 <= 1.15, f"the unfolded fp16 profile passed: {ratio}"
