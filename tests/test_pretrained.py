"""--backbone-weights: torchvision's ImageNet files into the trunks, and --iters 0."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from mobilevos_deploy.cli.train import main as train_main
from mobilevos_deploy.errors import CheckpointError
from mobilevos_deploy.export.api import export_model
from mobilevos_deploy.model.checkpoint import ChosenStudent, load_checkpoint
from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.student import build_student
from mobilevos_deploy.train.pretrained import load_backbone_weights

# -- torchvision's state_dict layouts, enumerated from torchvision.models' definitions ---


def _conv(shapes, name, cin, cout, k, groups=1):
    shapes[f"{name}.weight"] = (cout, cin // groups, k, k)


def _bn(shapes, name, c):
    for part in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{part}"] = (c,)
    shapes[f"{name}.num_batches_tracked"] = ()


def resnet18_shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    _conv(s, "conv1", 3, 64, 7)
    _bn(s, "bn1", 64)
    cin = 64
    for layer, width in ((1, 64), (2, 128), (3, 256), (4, 512)):
        for i in range(2):
            p = f"layer{layer}.{i}"
            _conv(s, f"{p}.conv1", cin, width, 3)
            _bn(s, f"{p}.bn1", width)
            _conv(s, f"{p}.conv2", width, width, 3)
            _bn(s, f"{p}.bn2", width)
            if i == 0 and cin != width:
                _conv(s, f"{p}.downsample.0", cin, width, 1)
                _bn(s, f"{p}.downsample.1", width)
            cin = width
    s["fc.weight"], s["fc.bias"] = (1000, 512), (1000,)
    return s


def mobilenet_v2_shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    _conv(s, "features.0.0", 3, 32, 3)
    _bn(s, "features.0.1", 32)
    cin, index = 32, 1
    for t, c, n, _stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for _ in range(n):
            p, hidden, j = f"features.{index}.conv", cin * t, 0
            if t != 1:
                _conv(s, f"{p}.0.0", cin, hidden, 1)
                _bn(s, f"{p}.0.1", hidden)
                j = 1
            _conv(s, f"{p}.{j}.0", hidden, hidden, 3, groups=hidden)
            _bn(s, f"{p}.{j}.1", hidden)
            _conv(s, f"{p}.{j + 1}", hidden, c, 1)
            _bn(s, f"{p}.{j + 2}", c)
            cin, index = c, index + 1
    _conv(s, "features.18.0", 320, 1280, 1)
    _bn(s, "features.18.1", 1280)
    s["classifier.1.weight"], s["classifier.1.bias"] = (1000, 1280), (1000,)
    return s


def fake_imagenet(shapes: dict, seed: int) -> dict[str, torch.Tensor]:
    """Distinct values in torchvision's layout, with trained-like scales."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:
            state[key] = (0.5 + 0.5 * torch.rand(shape, generator=g)) if key.endswith(
                ".weight") else 0.05 * torch.randn(shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return state


def _params(shapes):
    return sum(math.prod(v) for k, v in shapes.items()
               if k.split(".")[-1] not in ("running_mean", "running_var", "num_batches_tracked"))


def test_the_layouts_are_torchvisions():
    # torchvision's published parameter counts (its weight enums' num_params) and tensors
    assert (len(resnet18_shapes()), _params(resnet18_shapes())) == (122, 11_689_512)
    assert (len(mobilenet_v2_shapes()), _params(mobilenet_v2_shapes())) == (314, 3_504_872)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    out = {}
    for name, shapes, seed in (("resnet18-f37072fd.pth", resnet18_shapes(), 1),
                               ("mobilenet_v2-7ebf99e0.pth", mobilenet_v2_shapes(), 2)):
        state = fake_imagenet(shapes, seed)
        torch.save(state, root / name)
        out[name] = (root / name, state)
    return out


def _owner(value: torch.Tensor, source: dict) -> list[str]:
    return [k for k, v in source.items() if v.shape == value.shape and torch.equal(v, value)
            and not k.endswith("num_batches_tracked")]


def test_each_trunk_tensor_lands_where_it_belongs(files):
    student = build_student(get_variant("resnet18").config, seed=0, centre=False)
    r18_path, r18 = files["resnet18-f37072fd.pth"]
    mb_path, mb = files["mobilenet_v2-7ebf99e0.pth"]
    report = load_backbone_weights(student, [r18_path, mb_path], seed=0)
    key = student.key_encoder.trunk.state_dict()
    value = student.value_encoder.trunk.state_dict()
    # named by hand from torchvision's definitions
    pairs = [(key, "stem.0.weight", r18, "conv1.weight"),
             (key, "stem.1.running_var", r18, "bn1.running_var"),
             (key, "layer1.1.conv2.weight", r18, "layer1.1.conv2.weight"),
             (key, "layer2.0.downsample.0.weight", r18, "layer2.0.downsample.0.weight"),
             (key, "layer3.1.bn2.bias", r18, "layer3.1.bn2.bias"),
             (value, "blocks.0.1.weight", mb, "features.0.1.weight"),
             (value, "blocks.1.block.0.0.weight", mb, "features.1.conv.0.0.weight"),
             (value, "blocks.1.block.2.running_mean", mb, "features.1.conv.2.running_mean"),
             (value, "blocks.7.block.1.0.weight", mb, "features.7.conv.1.0.weight"),
             (value, "blocks.13.block.3.bias", mb, "features.13.conv.3.bias")]
    for ours, name, source, theirs in pairs:
        assert torch.equal(ours[name], source[theirs]), (name, theirs)
    # every other trunk tensor is exactly one file tensor, and the file's leftovers are
    # exactly what lies beyond stride 16
    # (the value trunk's RGB first conv is not used: its 2-channel conv is adapted)
    for ours, source, skip, beyond in ((key, r18, None, ("layer4.", "fc.")),
                                       (value, mb, "blocks.0.0.weight",
                                        tuple(f"features.{i}." for i in range(14, 19))
                                        + ("classifier.", "features.0.0.weight"))):
        used = set()
        for name, tensor in ours.items():
            if name.endswith("num_batches_tracked") or name == skip:
                continue
            owner = _owner(tensor, source)
            assert len(owner) == 1, (name, owner)
            used |= set(owner)
        left = {k for k in source if k not in used and not k.endswith("num_batches_tracked")}
        assert all(k.startswith(beyond) for k in left)
        assert any(k.startswith(beyond[0]) for k in left)
    # the 2-channel value conv: STCN's extra channels, orthogonal, not the RGB kernels
    adapted = value["blocks.0.0.weight"]
    assert adapted.shape == (32, 2, 3, 3)
    flat = adapted.reshape(32, 18)
    torch.testing.assert_close(flat.t() @ flat, torch.eye(18), atol=1e-5, rtol=0)
    assert not _owner(adapted, mb)
    text = "\n".join(report.lines())
    assert "resnet18-f37072fd.pth: torchvision resnet18 → key_encoder.trunk" in text
    assert "mobilenet_v2-7ebf99e0.pth: torchvision mobilenetv2 → value_encoder.trunk" in text
    assert "not used (beyond stride 16): fc.*, layer4.*" in text
    assert report.random == []


def test_a_trunk_without_a_file_is_listed_as_random(files):
    student = build_student(get_variant("resnet18").config, seed=0, centre=False)
    report = load_backbone_weights(student, [files["resnet18-f37072fd.pth"][0]])
    assert report.random == ["value_encoder.trunk"]
    assert "value_encoder.trunk: random" in "\n".join(report.lines())


def test_files_without_num_batches_tracked_load(files, tmp_path):
    _, state = files["mobilenet_v2-7ebf99e0.pth"]
    torch.save({k: v for k, v in state.items() if "num_batches" not in k}, tmp_path / "old.pth")
    student = build_student(get_variant("mobilenetv2").config, seed=0, centre=False)
    report = load_backbone_weights(student, [tmp_path / "old.pth"])
    assert report.loads[0].trunks == ["key_encoder.trunk", "value_encoder.trunk"]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("layer2.1.bn1.running_var"), "missing tensors: layer2.1.bn1.running_var"),
    (lambda s: s.__setitem__("layer3.9.conv1.weight", torch.zeros(1)),
     "unexpected tensors: layer3.9.conv1.weight"),
    (lambda s: s.__setitem__("layer1.0.conv2.weight", torch.zeros(64, 64, 1, 1)),
     "mis-shaped tensors: layer1.0.conv2.weight (64, 64, 1, 1) (expected (64, 64, 3, 3))"),
])
def test_anything_but_an_exact_fit_exits_2_naming_file_architecture_and_keys(
        files, tmp_path, edit, message):
    _, state = files["resnet18-f37072fd.pth"]
    state = dict(state)
    edit(state)
    torch.save(state, tmp_path / "r18.pth")
    out = tmp_path / "run"
    result = CliRunner().invoke(train_main, [
        "--model", "resnet18", "--out", str(out), "--iters", "0", "--backbone-weights",
        str(tmp_path / "r18.pth"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'r18.pth'}: not a torchvision resnet18" in result.output
    assert message in result.output
    assert not out.exists()


def test_a_missing_mobilenet_tensor_is_named_as_torchvision_names_it(files, tmp_path):
    _, state = files["mobilenet_v2-7ebf99e0.pth"]
    state = {k: v for k, v in state.items() if k != "features.12.conv.1.1.weight"}
    torch.save(state, tmp_path / "mb.pth")
    student = build_student(get_variant("mobilenetv2").config, seed=0, centre=False)
    with pytest.raises(CheckpointError,
                       match=r"missing tensors: features\.12\.conv\.1\.1\.weight$"):
        load_backbone_weights(student, [tmp_path / "mb.pth"])


def test_a_file_of_another_architecture_is_refused(files, tmp_path):
    student = build_student(get_variant("mobilenetv2-noaspp").config, seed=0, centre=False)
    with pytest.raises(CheckpointError, match="is a resnet18, but this student's trunks are "
                       "mobilenetv2"):
        load_backbone_weights(student, [files["resnet18-f37072fd.pth"][0]])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a torchvision ImageNet state_dict"):
        load_backbone_weights(student, [tmp_path / "x.pth"])


def test_iters_0_writes_the_initial_student_and_it_passes_every_export_gate(files, tmp_path):
    path, state = files["mobilenet_v2-7ebf99e0.pth"]
    out = tmp_path / "run"
    result = CliRunner().invoke(train_main, [
        "--model", "mobilenetv2-noaspp", "--out", str(out), "--iters", "0",
        "--backbone-weights", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "→ key_encoder.trunk, value_encoder.trunk" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]
    loaded = load_checkpoint(out / "last.pt", "mobilenetv2-noaspp")
    trunk = loaded.student.key_encoder.trunk.state_dict()
    assert torch.equal(trunk["blocks.5.block.1.0.weight"], state["features.5.conv.1.0.weight"])
    export = export_model(ChosenStudent(loaded.student, "mobilenetv2-noaspp", False,
                                        out / "last.pt"), 2, 32, 48, tmp_path / "export",
                          objects=False)
    gates = export.manifest["gates"]
    assert gates and all(g["passed"] for g in gates.values()), gates
