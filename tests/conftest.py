"""Shared fixtures: seeded random-initialised students, built once per session."""

from __future__ import annotations

import pytest

from mobilevos_deploy.config import get_variant, variant_names
from mobilevos_deploy.student import Student, build_student

VARIANTS = variant_names()


@pytest.fixture(scope="session")
def students() -> dict[str, Student]:
    return {name: build_student(get_variant(name).config, seed=0) for name in VARIANTS}
