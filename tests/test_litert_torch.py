"""litert-torch, the second converter: an export of the trained default student passes
every gate on its files, the two converters' models agree on the step, its fp16 model is
one copy of the weights, and a missing venv names its fix.

The export here ships init and step (``--single-object``): litert-torch lowers each graph
on its own, about 15 s a graph on two cores, and the suite's time is bounded. The K-object
graphs through litert-torch, with every K-object gate, are exported by
``benchmarks/converters.py`` (docs/BENCHMARKS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilevos_deploy.errors import UserError
from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.export.build.merge import signature_keys
from mobilevos_deploy.model.graphs import shipped_graphs
from mobilevos_deploy.runtime.runners import tflite_runner
from mobilevos_deploy.runtime.venv import LITERT_TORCH_VAR

from .conftest import EXPORT_HEIGHT, EXPORT_WIDTH, TRAINED

# Each converter's step is within the step-parity limit of exact arithmetic (prob 1e-4
# absolute, state 1e-4 relative, or 4x PyTorch fp32's own error where that is larger);
# two files that both pass are then within twice that of each other. A mis-converted
# read-out (onnx2tf's coincident-dimension bug) moved it by 0.2 to 0.7.
AGREE_PROB = 2e-4
AGREE_STATE = 2e-4


@pytest.fixture(scope="module")
def litert(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("litert_torch") / "trained_q2"
    return export_model(trained, 2, EXPORT_HEIGHT, EXPORT_WIDTH, folder,
                        converter="litert-torch", objects=False)


def test_litert_torch_export_passes_every_gate(litert, exports):
    manifest = litert.manifest
    assert manifest["converter"]["name"] == "litert-torch"
    assert manifest["converter"]["litert-torch"] == "0.10.0"
    # the same gates as the onnx2tf export of the same student (but for the K-object
    # graphs', which this one does not ship), every one passed
    single = {name for name in exports(TRAINED, 2).manifest["gates"] if "objects" not in name}
    assert set(manifest["gates"]) == single
    failed = [name for name, gate in manifest["gates"].items() if not gate["passed"]]
    assert not failed
    assert manifest["gpu_run"]["verdict"] == "fully accelerated"
    assert manifest["gpu_check"]["verdict"] == "compatible"
    for precision in ("fp32", "fp16"):
        assert signature_keys(litert.folder / f"model_{precision}.tflite") == list(
            shipped_graphs(2, objects=False))
    assert manifest["models"]["model_fp16.tflite"]["vs_fp16_weights"] <= 1.15


def test_the_two_converters_agree_on_the_step(litert, exports):
    """Both converters' fp32 step on the state PyTorch's init writes for a real frame,
    then on that step's own next state: the probability and every state tensor."""
    from mobilevos_deploy.data.synthetic import scene_clip

    onnx2tf = exports(TRAINED, 2)
    specs = {g: _spec(onnx2tf.manifest, g) for g in ("init", "step")}
    clip = scene_clip(3, EXPORT_HEIGHT, EXPORT_WIDTH, seed=5)
    frames = clip.frames.numpy().astype(np.float32)
    mask = (clip.ids()[:1, None] == 1).numpy().astype(np.float32)
    runs = {}
    for name, result in (("onnx2tf", onnx2tf), ("litert-torch", litert)):
        path = result.folder / "model_fp32.tflite"
        init, step = (tflite_runner(path, specs[g]) for g in ("init", "step"))
        state = init({"frame": frames[:1], "mask": mask})
        outs = []
        for t in (1, 2):
            out = step({"frame": frames[t : t + 1], **state})
            state = {k: out["next_" + k] for k in state}
            outs.append(out)
        runs[name] = outs
    for a, b in zip(runs["onnx2tf"], runs["litert-torch"], strict=True):
        assert all(np.isfinite(x).all() for out in (a, b) for x in out.values())
        assert np.abs(a["prob"] - b["prob"]).max() <= AGREE_PROB
        for key in a:
            if key != "prob":
                scale = 1.0 + np.abs(a[key])
                assert (np.abs(a[key] - b[key]) / scale).max() <= AGREE_STATE, key


def test_the_agreement_check_catches_a_different_model(litert, exports, students):
    """Negative control: the same comparison against the seeded (untrained) student's
    export fails by far."""
    other = exports("mobilenetv2-noaspp", 2)
    specs = _spec(other.manifest, "step")
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random(t.shape, dtype=np.float32) for t in specs.inputs}
    feeds["mem_valid"][:] = 1.0
    a = tflite_runner(other.folder / "model_fp32.tflite", specs)(feeds)
    b = tflite_runner(litert.folder / "model_fp32.tflite", specs)(feeds)
    assert np.abs(a["prob"] - b["prob"]).max() > 100 * AGREE_PROB


def test_missing_litert_torch_venv_names_the_fix(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(LITERT_TORCH_VAR, str(tmp_path / "nope" / "python"))
    with pytest.raises(UserError, match="make litert-torch-venv"):
        export_model(trained, 2, EXPORT_HEIGHT, EXPORT_WIDTH, tmp_path / "x",
                     converter="litert-torch", objects=False)
    assert not (tmp_path / "x").exists()


def _spec(manifest, graph):
    from mobilevos_deploy.model.config import StudentConfig
    from mobilevos_deploy.model.graphs import config_specs

    return config_specs(StudentConfig.from_dict(manifest["config"]), manifest["queue"],
                        *manifest["size"])[graph]
