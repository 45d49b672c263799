"""The released STCN as the teacher: its key names and shapes, strict loading, and its
outputs against an independent composition of the same layers on the same weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mobilevos_deploy.cli.info import main as info_main
from mobilevos_deploy.errors import CheckpointError
from mobilevos_deploy.train.stcn import STCNTeacher
from mobilevos_deploy.train.teacher import load_teacher

# -- STCN's released state_dict, enumerated from its published modules -------------------
# key_encoder: torchvision ResNet50 to layer3 (no conv biases); value_encoder: STCN's
# mod_resnet ResNet18 (conv biases) on 5 channels to layer3, then the CBAM fuser;
# key_proj.key_proj, key_comp, decoder (compress, up_16_8, up_8_4, pred).


def stcn_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, bias=True):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{name}.bias"] = (cout,)

    def bn(name, c):
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{part}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    def resblock(name, cin, cout):
        if cin != cout:
            conv(f"{name}.downsample", cin, cout, 3)
        conv(f"{name}.conv1", cin, cout, 3)
        conv(f"{name}.conv2", cout, cout, 3)

    conv("key_encoder.conv1", 3, 64, 7, bias=False)
    bn("key_encoder.bn1", 64)
    cin = 64
    for layer, width, count in (("res2", 64, 3), ("layer2", 128, 4), ("layer3", 256, 6)):
        for i in range(count):
            p = f"key_encoder.{layer}.{i}"
            conv(f"{p}.conv1", cin, width, 1, bias=False)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3, bias=False)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3", width, width * 4, 1, bias=False)
            bn(f"{p}.bn3", width * 4)
            if i == 0:
                conv(f"{p}.downsample.0", cin, width * 4, 1, bias=False)
                bn(f"{p}.downsample.1", width * 4)
            cin = width * 4
    conv("value_encoder.conv1", 5, 64, 7)
    bn("value_encoder.bn1", 64)
    cin = 64
    for layer, width in (("layer1", 64), ("layer2", 128), ("layer3", 256)):
        for i in range(2):
            p = f"value_encoder.{layer}.{i}"
            conv(f"{p}.conv1", cin, width, 3)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3)
            bn(f"{p}.bn2", width)
            if i == 0 and cin != width:
                conv(f"{p}.downsample.0", cin, width, 1)
                bn(f"{p}.downsample.1", width)
            cin = width
    resblock("value_encoder.fuser.block1", 1280, 512)
    gate = "value_encoder.fuser.attention"
    shapes[f"{gate}.ChannelGate.mlp.1.weight"] = (32, 512)
    shapes[f"{gate}.ChannelGate.mlp.1.bias"] = (32,)
    shapes[f"{gate}.ChannelGate.mlp.3.weight"] = (512, 32)
    shapes[f"{gate}.ChannelGate.mlp.3.bias"] = (512,)
    conv(f"{gate}.SpatialGate.spatial.conv", 2, 1, 7)
    resblock("value_encoder.fuser.block2", 512, 512)
    conv("key_proj.key_proj", 1024, 64, 3)
    conv("key_comp", 1024, 512, 3)
    resblock("decoder.compress", 1024, 512)
    conv("decoder.up_16_8.skip_conv", 512, 512, 3)
    resblock("decoder.up_16_8.out_conv", 512, 256)
    conv("decoder.up_8_4.skip_conv", 256, 256, 3)
    resblock("decoder.up_8_4.out_conv", 256, 256)
    conv("decoder.pred", 256, 1, 3)
    return shapes


def random_stcn_state(seed: int = 0, value_channels: int = 5) -> dict[str, torch.Tensor]:
    """Random weights in STCN's exact layout, with trained-like scales."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in stcn_shapes().items():
        if key == "value_encoder.conv1.weight":
            shape = (64, value_channels, 7, 7)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BatchNorm scale
            state[key] = 0.5 + 0.5 * torch.rand(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


def test_stcn_layout_is_the_released_one():
    shapes = stcn_shapes()
    params = sum(math.prod(s) for k, s in shapes.items()
                 if k.split(".")[-1] not in ("running_mean", "running_var",
                                             "num_batches_tracked"))
    assert (len(shapes), params) == (405, 54_434_180)  # STCN's 405 tensors, 54.43 M
    ours = STCNTeacher().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == shapes


@pytest.fixture(scope="module")
def stcn_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stcn") / "stcn.pth"
    state = random_stcn_state()
    torch.save(state, path)  # a plain state_dict, as STCN saves it
    return path, state


def test_released_checkpoint_loads_strictly_with_its_values(stcn_file):
    path, state = stcn_file
    teacher = load_teacher(path, mem_every=3)
    assert isinstance(teacher, STCNTeacher) and teacher.mem_every == 3
    loaded = teacher.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_four_channel_value_conv_is_padded_with_zeros(tmp_path):
    state = random_stcn_state(value_channels=4)
    torch.save(state, tmp_path / "old.pth")
    conv = load_teacher(tmp_path / "old.pth").state_dict()["value_encoder.conv1.weight"]
    assert conv.shape == (64, 5, 7, 7)
    assert torch.equal(conv[:, :4], state["value_encoder.conv1.weight"])
    assert not conv[:, 4].any()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("decoder.pred.bias"), "missing tensors: decoder.pred.bias"),
    (lambda s: s.__setitem__("decoder.extra.weight", torch.zeros(1)), "unexpected tensors"),
    (lambda s: s.__setitem__("key_comp.weight", torch.zeros(512, 1024, 1, 1)),
     "mis-shaped tensors: key_comp.weight (512, 1024, 1, 1)"),
])
def test_a_state_dict_that_is_not_stcn_is_refused_by_name(tmp_path, edit, message):
    state = random_stcn_state()
    edit(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not STCN's released network") as err:
        load_teacher(tmp_path / "bad.pth")
    assert message in str(err.value)


def test_info_prints_the_teachers_kind_and_size(stcn_file):
    result = CliRunner().invoke(info_main, ["--teacher", str(stcn_file[0])])
    assert result.exit_code == 0, result.output
    assert "teacher kind stcn, 54,434,180 parameters (54.43 M), 405 tensors" in result.output


# -- an independent composition of the same layers ---------------------------------------

def _conv(x, w, name, stride=1):
    weight = w[f"{name}.weight"]
    return F.conv2d(x, weight, w.get(f"{name}.bias"), stride, weight.shape[-1] // 2)


def _bn(x, w, name):
    return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"],
                        w[f"{name}.weight"], w[f"{name}.bias"], False, 0.0, 1e-5)


def _block(x, w, p, stride, convs):
    """A ResNet block: ``convs`` conv/bn pairs (ReLU between), the shortcut, ReLU."""
    y = x
    for i in range(1, convs + 1):
        y = _bn(_conv(y, w, f"{p}.conv{i}", stride if (convs == 2 and i == 1) or
                      (convs == 3 and i == 2) else 1), w, f"{p}.bn{i}")
        if i < convs:
            y = F.relu(y)
    if f"{p}.downsample.0.weight" in w:
        x = _bn(_conv(x, w, f"{p}.downsample.0", stride), w, f"{p}.downsample.1")
    return F.relu(x + y)


def _res(x, w, p):
    r = _conv(F.relu(_conv(F.relu(x), w, f"{p}.conv1")), w, f"{p}.conv2")
    return (_conv(x, w, f"{p}.downsample") if f"{p}.downsample.weight" in w else x) + r


def _cbam(x, w, p):
    def mlp(v):
        gate = f"{p}.ChannelGate.mlp"
        v = F.relu(F.linear(v, w[f"{gate}.1.weight"], w[f"{gate}.1.bias"]))
        return F.linear(v, w[f"{gate}.3.weight"], w[f"{gate}.3.bias"])

    pooled_avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
    pooled_max = F.adaptive_max_pool2d(x, 1).flatten(1)
    x = x * torch.sigmoid(mlp(pooled_avg) + mlp(pooled_max))[..., None, None]
    maps = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], 1)
    return x * torch.sigmoid(_conv(maps, w, f"{p}.SpatialGate.spatial.conv"))


def _reference(w, frames, mask):
    """(key of frame 0, value of frame 0, decoder logit of frame 1 after aggregation)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def key(frame):
        x = F.relu(_bn(_conv((frame - mean) / std, w, "key_encoder.conv1", 2), w,
                       "key_encoder.bn1"))
        x = F.max_pool2d(x, 3, 2, 1)
        feats = []
        for layer, count, stride in (("res2", 3, 1), ("layer2", 4, 2), ("layer3", 6, 2)):
            for i in range(count):
                x = _block(x, w, f"key_encoder.{layer}.{i}", stride if i == 0 else 1, 3)
            feats.append(x)
        f4, f8, f16 = feats
        return _conv(f16, w, "key_proj.key_proj"), _conv(f16, w, "key_comp"), f16, f8, f4

    def aggregate(p):  # STCN's aggregate for one object, then the foreground's logit
        probs = torch.cat([1 - p, p], 1).clamp(1e-7, 1 - 1e-7)
        soft = torch.softmax(torch.log(probs / (1 - probs)), dim=1)
        return torch.log(soft[:, 1:] / soft[:, :1])

    k0, _, f16, _, _ = key(frames[:, 0])
    prob0 = torch.sigmoid(aggregate(mask))
    x = torch.cat([(frames[:, 0] - mean) / std, prob0, torch.zeros_like(prob0)], 1)
    x = F.max_pool2d(F.relu(_bn(_conv(x, w, "value_encoder.conv1", 2), w,
                                "value_encoder.bn1")), 3, 2, 1)
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2)):
        for i in range(2):
            x = _block(x, w, f"value_encoder.{layer}.{i}", stride if i == 0 else 1, 2)
    x = _res(torch.cat([x, f16], 1), w, "value_encoder.fuser.block1")
    v0 = _res(x + _cbam(x, w, "value_encoder.fuser.attention"), w, "value_encoder.fuser.block2")

    k1, q1, _, f8, f4 = key(frames[:, 1])
    mk, q = k0.flatten(2)[0], k1.flatten(2)[0]  # Ck x N, Ck x P
    distance = (mk[:, :, None] - q[:, None, :]).pow(2).sum(0)  # N x P squared L2
    weights = torch.softmax(-distance / math.sqrt(mk.shape[0]), dim=0)  # |q|^2 cancels
    readout = (v0.flatten(2)[0] @ weights).view(1, -1, *k1.shape[-2:])
    x = _res(torch.cat([readout, q1], 1), w, "decoder.compress")
    for stage, skip in (("up_16_8", f8), ("up_8_4", f4)):
        up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = _res(_conv(skip, w, f"decoder.{stage}.skip_conv") + up, w,
                 f"decoder.{stage}.out_conv")
    logit = F.interpolate(_conv(F.relu(x), w, "decoder.pred"), scale_factor=4.0,
                          mode="bilinear", align_corners=False)
    return k0, v0, aggregate(torch.sigmoid(logit))


def test_keys_values_and_logits_equal_an_independent_composition(stcn_file):
    path, state = stcn_file
    teacher = load_teacher(path)
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 2, 3, 64, 96, generator=g)
    mask = torch.zeros(1, 1, 64, 96)
    mask[..., 16:48, 20:60] = 1.0
    with torch.no_grad():
        memory = teacher.start(frames[:, 0], mask)
        out, _ = teacher.step(frames[:, 1], memory, remember=False)
        k0, v0, logit = _reference(state, frames, mask)
    for ours, ref in ((memory.keys, k0.flatten(2)), (memory.values, v0.flatten(2)),
                      (out.logits, logit)):
        assert torch.isfinite(ours).all() and ours.shape == ref.shape
        scale = ref.abs().max()
        assert scale > 0.01  # the comparison measures something
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(scale))
    assert out.features.shape == (1, 256, 16, 24)
    assert 0.02 < torch.sigmoid(out.logits).mean() < 0.98  # not a saturated comparison


def test_stcn_teacher_distils_a_student(stcn_file, tmp_path):
    from mobilevos_deploy.cli.train import main as train_main
    from mobilevos_deploy.data.synthetic import shapes_clip, write_davis_clip

    write_davis_clip(shapes_clip(4, 64, 64, seed=3), tmp_path / "data", "s0")
    result = CliRunner().invoke(train_main, [
        "--model", "mobilenetv2-noaspp", "--out", str(tmp_path / "run"), "--data",
        str(tmp_path / "data"), "--teacher", str(stcn_file[0]), "--iters", "1",
        "--size", "64x64", "--batch", "1", "--frames", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert record["logit"] > 0 and record["repr"] > 0 and record["sampled"] > 0
