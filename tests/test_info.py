"""mvos-info: the table for every variant, and counts that agree with first principles."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mobilevos_deploy.cli.info import main as info_cli
from mobilevos_deploy.model.profile import profile_variant
from mobilevos_deploy.nn.readout import distinct_size

from .conftest import VARIANTS


def test_info_prints_every_variant():
    result = CliRunner().invoke(info_cli, ["--size", "64x96", "--queue", "3"])
    assert result.exit_code == 0, result.output
    for name in VARIANTS:
        assert f"{name}  (" in result.output
    for line in ("parameters", "MACs per step at 64x96, queue 3", "readout", "mem_keys",
                 "affinity"):
        assert line in result.output


@pytest.mark.parametrize("queue", [1, 4])
def test_counted_sizes_match_the_shapes(students, queue):
    name = "mobilenetv2"
    p = profile_variant(name, 64, 96, queue)
    cfg = students[name].config
    n, positions = queue * 4 * 6, 4 * 6
    # the read-out is two matrix products: q (P x Ck+1) keys (Ck+1 x N), the extra channel
    # carrying -|mk|^2, and weights (P x N) values (N x Cv), over N and P padded so that no
    # two axes have the same size (see nn/readout.py)
    dims = {cfg.key_dim, cfg.key_dim + 1, cfg.value_dim}
    n_in = distinct_size(n, dims)
    p_in = distinct_size(positions, dims | {n_in})
    assert p.macs["readout"] == (cfg.key_dim + 1 + cfg.value_dim) * n_in * p_in
    assert p.affinity_bytes == n_in * p_in * 4
    assert p.params["total"] == sum(p.params[k] for k in
                                    ("key_encoder", "value_encoder", "readout", "decoder"))
    assert p.macs["total"] == sum(p.macs[k] for k in
                                  ("key_encoder", "value_encoder", "readout", "decoder"))
    assert (p.macs["value_encoder"] == 0) == (queue == 1)  # Q = 1 encodes no value
    assert p.state_bytes == 4 * (cfg.key_dim + cfg.value_dim + 1) * n


def test_info_rejects_bad_size_and_variant():
    runner = CliRunner()
    bad_size = runner.invoke(info_cli, ["--size", "50x96"])
    assert bad_size.exit_code == 2 and "multiples of 16" in bad_size.output
    bad_variant = runner.invoke(info_cli, ["--variant", "vgg"])
    assert bad_variant.exit_code == 2 and "unknown variant 'vgg'" in bad_variant.output
