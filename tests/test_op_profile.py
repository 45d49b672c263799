"""The host op profiler (bench/op_profile.py) times what the whole graph runs: its one-op
models read weights as constants in both precisions, and the ops' times add up to the
whole graph's. An fp16 file's weights are DEQUANTIZE outputs; cut out as they stood, they
became variable inputs and the op sum came out about 4x (1 thread) to 7x (2 threads) the
whole graph at 64x96, 7x at 480x864."""

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


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_op_sum_stays_within_15_percent_of_the_whole_graph(step, precision):
    # One thread: with two on this 2-core machine shared with other work, each op's median
    # drops the runs a preempted thread stalled while the whole graph's median cannot, and
    # the sum fell 10-20 % under the whole graph with the profiler right (0.78-0.90).
    # The median of five profiles: a single one ranged 0.94-1.53 under load.
    ratios = []
    for _ in range(5):
        profile = profile_ops(step[precision], threads=1, runs=30)
        ratios.append(sum(t.ms for t in profile.ops) / profile.whole_ms)
    ratio = statistics.median(ratios)
    assert 0.85 <= ratio <= 1.15, f"op sum / whole graph: {[round(r, 2) for r in ratios]}"
