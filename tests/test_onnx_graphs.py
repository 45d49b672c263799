"""The ONNX half of the export: static graphs that ONNX Runtime runs like PyTorch.

The onnx2tf / TFLite half and the export gates are exercised by test_export.py and
test_export_gates.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mobilevos_deploy.export.build.onnx import export_onnx
from mobilevos_deploy.export.gates.parity import nchw_clip, rollout, step_parity
from mobilevos_deploy.model.graphs import graph_module, graph_specs
from mobilevos_deploy.runtime.runners import onnx_runner, torch_runner

from .conftest import VARIANTS


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("queue", [1, 3])
def test_onnx_step_matches_pytorch(students, tmp_path, name, queue):
    student = students[name]
    specs = graph_specs(student, queue, 64, 96)
    runners = {}
    for graph in ("init", "step", "probe"):
        path = tmp_path / f"{graph}.onnx"
        export_onnx(graph_module(student, queue, graph), specs[graph], path)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not ops & {"Shape", "Gather", "Expand", "TopK"}, ops
        runners[graph] = onnx_runner(path, specs[graph])
    frames, masks = nchw_clip(6, 64, 96, seed=4)
    torch_init = torch_runner(graph_module(student, queue, "init"), specs["init"])
    torch_step = torch_runner(graph_module(student, queue, "step"), specs["step"])
    state = torch_init({"frame": frames[:1], "mask": masks[:1, None]})
    inputs = {"frame": frames[1:2], **state}
    gate = step_parity(specs["probe"], torch_runner(graph_module(student, queue, "probe"),
                       specs["probe"]), {"onnx": runners["probe"]}, inputs,
                       prob_atol=1e-4, state_rtol=1e-4)
    assert gate.passed, gate.offending
    ref = rollout(torch_init, torch_step, specs["step"], frames, masks[0])
    got = rollout(runners["init"], runners["step"], specs["step"], frames, masks[0])
    assert np.isfinite(got).all()
    assert np.max(np.abs(got - ref)) <= 1e-3
