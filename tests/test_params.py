"""Parameter counts against the paper (Table 4), and the model cards against the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mobilevos_deploy.model.config import get_variant
from mobilevos_deploy.model.student import Student

from .conftest import VARIANTS

CARDS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_within_ten_percent_of_paper(students: dict[str, Student], name: str):
    total = sum(p.numel() for p in students[name].parameters())
    paper = get_variant(name).paper_params * 1e6
    assert abs(total - paper) <= 0.10 * paper, f"{name}: {total / 1e6:.3f}M vs paper {paper / 1e6}M"


def test_aspp_is_the_difference_between_the_mobilenet_variants(students: dict[str, Student]):
    with_aspp = sum(p.numel() for p in students["mobilenetv2"].parameters())
    without = sum(p.numel() for p in students["mobilenetv2-noaspp"].parameters())
    aspp = sum(p.numel() for p in students["mobilenetv2"].decoder.aspp.parameters())
    assert with_aspp - without == aspp
    assert 0.4e6 < aspp < 0.8e6  # the paper's 2.5M - 1.9M


@pytest.mark.parametrize("name", VARIANTS)
def test_model_card_states_the_registered_config(name: str):
    text = (CARDS / f"{name}.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block, f"models/{name}.md has no json config block"
    assert json.loads(block.group(1)) == json.loads(json.dumps(get_variant(name).config.to_dict()))
    assert f"{get_variant(name).paper_params}M" in text
