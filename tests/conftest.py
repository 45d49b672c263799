"""Shared fixtures: the seeded random-initialised students, the shipped trained default
student, and their exports, built once per session (exports lazily, on first use)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mobilevos_deploy.export.api import ExportResult, export_model
from mobilevos_deploy.export.build.convert import convert_graphs
from mobilevos_deploy.model.checkpoint import ChosenStudent, student_for
from mobilevos_deploy.model.config import DEFAULT_VARIANT, get_variant, variant_names
from mobilevos_deploy.model.graphs import GraphSpec
from mobilevos_deploy.model.stages import TensorSpec
from mobilevos_deploy.model.student import Student, build_student

VARIANTS = variant_names()
EXPORT_HEIGHT, EXPORT_WIDTH = 64, 96
TRAINED = "trained"  # the shipped default student, as a key of the exports fixture


@pytest.fixture(scope="session")
def students() -> dict[str, Student]:
    return {name: build_student(get_variant(name).config, seed=0) for name in VARIANTS}


@pytest.fixture(scope="session")
def trained() -> ChosenStudent:
    """The student every command uses by default (models/mobilenetv2-noaspp_synth.pt)."""
    chosen = student_for(None, None)
    assert chosen.trained and chosen.variant == DEFAULT_VARIANT
    return chosen


def seeded(student: Student, variant: str) -> ChosenStudent:
    """``student`` (a seeded, untrained one) as the export takes it."""
    return ChosenStudent(student, variant, trained=False)


def ships_objects(variant: str, queue: int) -> bool:
    """Whether the ``exports`` fixture's folder of (variant, queue) has the K-object graphs."""
    return variant == TRAINED or (variant == DEFAULT_VARIANT and queue == 2)


@pytest.fixture(scope="session")
def exports(tmp_path_factory, students, trained):
    """Lazily exported folders, one per (variant, queue), shared by the whole session;
    variant TRAINED is the shipped default student, exported as mvos-export does it, with
    the K-object graphs; of the seeded students only the default variant at queue 2 ships
    them too (the others are exported --single-object, which keeps the suite's time: each
    K-object set adds about 20 s of conversion and gates). The K-object graphs at queue 1
    are exported and gated in test_export_gates.py's CLI test."""
    root = tmp_path_factory.mktemp("exports")
    done: dict[tuple[str, int], ExportResult] = {}

    def get(variant: str, queue: int) -> ExportResult:
        if (variant, queue) not in done:
            folder = root / f"{variant}_q{queue}"
            if variant == TRAINED:
                done[variant, queue] = export_model(
                    trained, queue, EXPORT_HEIGHT, EXPORT_WIDTH, folder)
            else:
                done[variant, queue] = export_model(
                    seeded(students[variant], variant), queue, EXPORT_HEIGHT, EXPORT_WIDTH,
                    folder, objects=ships_objects(variant, queue))
        return done[variant, queue]

    return get


# --- negative controls for the GPU verdicts: ops outside the TFLite GPU delegate -------------

class UnsupportedOps(nn.Module):
    """TOPK_V2 and ARG_MAX (int64 output): both outside the classic TFLite GPU delegate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: 1 x 3 x 16 x 16
        flat = x.flatten(1)
        top = torch.topk(flat, 5, dim=1).values
        arg = torch.argmax(flat, dim=1, keepdim=True).float()
        return torch.cat([top, arg], dim=1)


class TopkOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: 1 x 3 x 16 x 16
        return torch.topk(x.flatten(1), 5, dim=1).values


def _control(work: Path, name: str, module: nn.Module, width: int) -> Path:
    spec = GraphSpec(name, (TensorSpec("x", (1, 3, 16, 16), "float32", "NCHW"),),
                     (TensorSpec("y", (1, width), "float32", f"B,{width}"),))
    torch.onnx.export(module, (torch.rand(1, 3, 16, 16),), str(work / f"{name}.onnx"),
                      input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    # an image-only model: onnx2tf would download calibration data if it were not local
    return convert_graphs({name: (work / f"{name}.onnx", spec)}, work)[f"{name}_fp32"]


@pytest.fixture(scope="session")
def control_tflite(tmp_path_factory) -> Path:
    return _control(tmp_path_factory.mktemp("control"), "control", UnsupportedOps(), 6)


@pytest.fixture(scope="session")
def topk_tflite(tmp_path_factory) -> Path:
    return _control(tmp_path_factory.mktemp("topk"), "topk", TopkOnly(), 5)
