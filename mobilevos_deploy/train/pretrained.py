"""ImageNet trunks from torchvision's published state_dict files (``--backbone-weights``).

Users download torchvision's files as they are (``resnet18-f37072fd.pth``,
``mobilenet_v2-b0353104.pth`` = IMAGENET1K_V1, ``mobilenet_v2-7ebf99e0.pth`` =
IMAGENET1K_V2): plain state_dicts of ``torchvision.models.resnet18()`` /
``mobilenet_v2()``. Each file is recognised by its keys and goes to every trunk of its
architecture in the student. The names map structurally (our trunks keep torchvision's
block order):

  ResNet18     conv1, bn1             → stem.0, stem.1
               layer1..layer3.*       → layer1..layer3.* (same names inside the blocks)
               layer4.*, fc.*         not used (our trunks stop at stride 16)
  MobileNetV2  features.0.{0,1}       → blocks.0.{0,1} (first ConvBNReLU)
               features.i.conv.*      → blocks.i.block.* for i = 1..13 (inverted residuals)
               features.14..18.*, classifier.*   not used (stride 32 and the classifier)

Every other difference (a missing, unexpected or mis-shaped tensor) is an error naming
the file, the architecture expected and the first offending keys. BatchNorm's
``num_batches_tracked`` may be absent (older files): the trunk keeps its own.

The value encoder reads 2 channels (object mask, other objects), not RGB. STCN widens
its value ResNet's first convolution for its extra mask channels by appending kernels
initialised with ``nn.init.orthogonal_`` next to the pretrained RGB kernels
(``load_weights_sequential`` in STCN's model/resnet.py). Ours has the two extra channels
and no RGB, so its first convolution is STCN's extra part alone: a 32 x 2 x 3 x 3
orthogonal kernel (seeded), with the pretrained BatchNorm after it; the RGB kernels of
``features.0.0.weight`` are reported as not used by that trunk. Every later layer of the
value trunk is the pretrained one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..model.checkpoint import non_finite, read_checkpoint_file
from ..model.student import Student
from ..nn.mobilenetv2 import MobileNetV2Trunk
from ..nn.resnet18 import ResNet18Trunk

_SHOW = 5
ARCHITECTURES = ("resnet18", "mobilenetv2")
# torchvision keys beyond our stride-16 trunks, per architecture
_UNUSED = {
    "resnet18": re.compile(r"^(layer4\.|fc\.)"),
    "mobilenetv2": re.compile(r"^(features\.(1[4-8])\.|classifier\.)"),
}
_LAST_MBV2_BLOCK = 13  # features.13 is the last block at stride 16


@dataclass
class TrunkLoad:
    """What one ``--backbone-weights`` file did."""

    path: Path
    architecture: str
    trunks: list[str]  # module names in the student that took its weights
    not_used: list[str] = field(default_factory=list)  # torchvision keys beyond stride 16
    adapted: list[str] = field(default_factory=list)  # first convs re-initialised (2-ch input)


@dataclass
class BackboneReport:
    loads: list[TrunkLoad]
    random: list[str]  # trunks left with their random initialisation

    def lines(self) -> list[str]:
        out = []
        for load in self.loads:
            out.append(f"{load.path.name}: torchvision {load.architecture} → "
                       f"{', '.join(load.trunks)}")
            if load.adapted:
                out.append(f"  first convolution of {', '.join(load.adapted)}: 2 input "
                           "channels (mask, other objects), orthogonal init as STCN's extra "
                           "channels; the RGB kernels are not used there")
            if load.not_used:
                out.append(f"  not used (beyond stride 16): {_summary(load.not_used)}")
        for name in self.random:
            out.append(f"{name}: random (no --backbone-weights file for its architecture)")
        return out


def _summary(keys: list[str]) -> str:
    """``layer4.*, fc.*``-style groups of the keys, with their count."""
    groups = sorted({".".join(k.split(".")[:2]) if k.startswith("features.") else
                     k.split(".")[0] for k in keys})
    return f"{', '.join(g + '.*' for g in groups)} ({len(keys)} tensors)"


def _listing(keys: list[str]) -> str:
    more = len(keys) - _SHOW
    return ", ".join(keys[:_SHOW]) + (f", ... and {more} more" if more > 0 else "")


def architecture_of(state: dict) -> str | None:
    """'resnet18' / 'mobilenetv2' from torchvision's key names and shapes, else None."""
    if "features.0.0.weight" in state and "classifier.1.weight" in state:
        return "mobilenetv2"
    block = state.get("layer1.0.conv1.weight")
    if "conv1.weight" in state and "fc.weight" in state and block is not None:
        if tuple(block.shape) == (64, 64, 3, 3) and "layer1.2.conv1.weight" not in state:
            return "resnet18"
    return None


def trunk_key(architecture: str, key: str) -> str | None:
    """Our trunk's name for torchvision's ``key``; None for keys beyond stride 16."""
    if _UNUSED[architecture].match(key):
        return None
    if architecture == "resnet18":
        for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
            if key.startswith(old):
                return new + key[len(old):]
        return key
    m = re.match(r"^features\.(\d+)\.(conv\.)?(.*)$", key)
    if m is None:
        return key  # reported as unexpected
    index, inner, rest = int(m.group(1)), m.group(2), m.group(3)
    if index == 0:
        return f"blocks.0.{rest}" if inner is None else key
    return f"blocks.{index}.block.{rest}" if inner else key


def torchvision_key(architecture: str, name: str) -> str:
    """The inverse of :func:`trunk_key`: torchvision's name for our trunk's ``name``."""
    if architecture == "resnet18":
        for old, new in (("stem.0.", "conv1."), ("stem.1.", "bn1.")):
            if name.startswith(old):
                return new + name[len(old):]
        return name
    m = re.match(r"^blocks\.(\d+)\.(block\.)?(.*)$", name)
    assert m is not None, name
    return f"features.{m.group(1)}.{'conv.' if m.group(2) else ''}{m.group(3)}"


def _trunks(student: Student) -> dict[str, nn.Module]:
    """Every trunk of the student by its module name."""
    return {name: module for name, module in student.named_modules()
            if isinstance(module, ResNet18Trunk | MobileNetV2Trunk)}


def _architecture(trunk: nn.Module) -> str:
    if isinstance(trunk, MobileNetV2Trunk):
        return "mobilenetv2"
    return "resnet18" if len(trunk.layer1) == 2 else "resnet34"


def _read_state(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"--backbone-weights {path}: no such file")
    obj = read_checkpoint_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"--backbone-weights {path}: not a state_dict of tensors; give "
                              "torchvision's ImageNet file as downloaded (resnet18-f37072fd.pth, "
                              "mobilenet_v2-b0353104.pth or mobilenet_v2-7ebf99e0.pth)")
    return obj


def _mapped(path: Path, state: dict, architecture: str, trunk: nn.Module, seed: int,
            adapt: bool) -> tuple[dict, list[str]]:
    """The trunk's new state_dict from torchvision's, and the keys beyond stride 16."""
    ours = trunk.state_dict()
    new, unused, unexpected, bad_shape, seen = {}, [], [], [], set()
    first_conv = "stem.0.weight" if architecture == "resnet18" else "blocks.0.0.weight"
    for key, value in state.items():
        name = trunk_key(architecture, key)
        seen.add(name)
        if name is None:
            unused.append(key)
        elif name not in ours:
            unexpected.append(key)
        elif name == first_conv and adapt:
            continue  # the 2-channel value trunk: re-initialised below
        elif value.shape != ours[name].shape:
            bad_shape.append(f"{key} {tuple(value.shape)} (expected {tuple(ours[name].shape)})")
        else:
            new[name] = value.to(ours[name].dtype)
    optional = {k for k in ours if k.endswith("num_batches_tracked")}
    missing = [torchvision_key(architecture, k) for k in ours
               if k not in seen and k not in optional]
    expected = f"torchvision {architecture} (ImageNet state_dict)"
    for problem, keys in (("missing", missing), ("unexpected", unexpected),
                          ("mis-shaped", bad_shape)):
        if keys:
            raise CheckpointError(f"--backbone-weights {path}: not a {expected}: {problem} "
                                  f"tensors: {_listing(keys)}")
    if adapt:
        kernel = torch.empty_like(ours[first_conv])
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            nn.init.orthogonal_(kernel)
        new[first_conv] = kernel
    return new, unused


def load_backbone_weights(student: Student, paths: list[Path], seed: int = 0) -> BackboneReport:
    """Loads each torchvision file into every trunk of its architecture; returns what
    went where. Raises CheckpointError (exit 2) for anything but an exact fit."""
    trunks = _trunks(student)
    loads, taken = [], set()
    for path in map(Path, paths):
        state = _read_state(path)
        arch = architecture_of(state)
        if arch is None:
            raise CheckpointError(
                f"--backbone-weights {path}: not a torchvision ImageNet state_dict of "
                f"{' or '.join(ARCHITECTURES)} (keys start {_listing(sorted(state))}); "
                "give resnet18-f37072fd.pth, mobilenet_v2-b0353104.pth or "
                "mobilenet_v2-7ebf99e0.pth as downloaded")
        bad = non_finite(state)
        if bad:
            raise CheckpointError(f"--backbone-weights {path}: non-finite values in "
                                  f"{_listing(bad)}; download the file again")
        targets = [n for n, t in trunks.items() if _architecture(t) == arch]
        if not targets:
            have = sorted({_architecture(t) for t in trunks.values()})
            raise CheckpointError(f"--backbone-weights {path} is a {arch}, but this student's "
                                  f"trunks are {', '.join(have)}")
        twice = [n for n in targets if n in taken]
        if twice:
            raise CheckpointError(f"--backbone-weights {path}: {', '.join(twice)} already took "
                                  "another file's weights; give one file per architecture")
        load = TrunkLoad(path, arch, targets)
        for name in targets:
            trunk = trunks[name]
            adapt = trunk.blocks[0][0].in_channels != 3 if arch == "mobilenetv2" else \
                trunk.stem[0].in_channels != 3
            new, load.not_used = _mapped(path, state, arch, trunk, seed, adapt)
            trunk.load_state_dict(new, strict=False)
            if adapt:
                load.adapted.append(name)
            taken.add(name)
        loads.append(load)
    return BackboneReport(loads, [n for n in trunks if n not in taken])
