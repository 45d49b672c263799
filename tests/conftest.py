"""Shared fixtures: seeded random-initialised students and their exports, built once per
session (exports lazily, on first use)."""

from __future__ import annotations

import pytest

from mobilevos_deploy.config import get_variant, variant_names
from mobilevos_deploy.export.api import ExportResult, export_model
from mobilevos_deploy.student import Student, build_student

VARIANTS = variant_names()
EXPORT_HEIGHT, EXPORT_WIDTH = 64, 96


@pytest.fixture(scope="session")
def students() -> dict[str, Student]:
    return {name: build_student(get_variant(name).config, seed=0) for name in VARIANTS}


@pytest.fixture(scope="session")
def exports(tmp_path_factory, students):
    """Lazily exported folders, one per (variant, queue), shared by the whole session."""
    root = tmp_path_factory.mktemp("exports")
    done: dict[tuple[str, int], ExportResult] = {}

    def get(variant: str, queue: int) -> ExportResult:
        if (variant, queue) not in done:
            done[variant, queue] = export_model(
                students[variant], variant, queue, EXPORT_HEIGHT, EXPORT_WIDTH,
                root / f"{variant}_q{queue}", trained=False)
        return done[variant, queue]

    return get
