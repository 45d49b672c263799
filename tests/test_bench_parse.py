"""Every benchmark_model sample parses, with the figures it holds.

The samples in tests/fixtures/benchmark_model are copied from the workspace's shared
fixtures (real outputs posted in public bug reports; see the README there), so a clean
checkout tests the same data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilevos_deploy.bench.parse import clean, parse_benchmark_output

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmark_model"
SAMPLES = sorted(p.name for p in FIXTURES.glob("*.txt"))


def parse(name: str):
    return parse_benchmark_output((FIXTURES / name).read_text())


def test_all_samples_are_present():
    assert len(SAMPLES) >= 8, FIXTURES


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_parses_to_something(name):
    out = parse(name)
    assert out.has_timings or out.runs or out.peak_memory_mb or out.delegation != "unknown"


def test_native_gpu_run():
    out = parse("gpu_native_adb.txt")
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (
        870557, 130565, 122373, 119375)
    assert out.inference.count == 50 and out.inference.values["std"] == 1948
    assert out.inference.ms("min") == pytest.approx(113.737)
    assert out.delegation == "full"


def test_logcat_prefix():
    out = parse("apk_logcat.txt")
    assert out.inference_avg_us == 12167.6 and out.init_us == 126059
    assert [r.count for r in out.runs] == [40, 75]


def test_scientific_numbers_and_a_single_count_line():
    out = parse("scientific_single_warmup.txt")
    assert out.warmup_avg_us == pytest.approx(1.04176e6)
    assert out.inference_avg_us == 971535 and out.init_us == 6418
    assert len(out.runs) == 1 and out.inference is None  # only the warm-up was printed


def test_percentiles():
    out = parse("percentiles.txt")
    assert out.runs[0].values["median"] == 245871 and out.runs[0].values["p95"] == 264534
    assert out.runs[0].values["p5"] == 216081


def test_peak_memory_and_memory_lines():
    assert parse("gpu_peak_memory.txt").peak_memory_mb == pytest.approx(74.6641)
    out = parse("memory_tail.txt")
    assert out.peak_memory_mb == pytest.approx(25.0508)
    assert out.memory_delta_mb == (pytest.approx(224.859), pytest.approx(260.609))


def test_legacy_average_form():
    out = parse("legacy_average.txt")
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (83235, 38467, 79760.9)


def test_partial_delegation_is_reported():
    out = parse("partial_delegation.txt")
    assert out.delegation == "partial" and (out.gpu_ops, out.cpu_ops) == (97, 200)
    assert [u.split(":")[0] for u in out.unsupported] == ["ARG_MAX", "CAST", "CONCATENATION"]


def test_prefixes_are_stripped():
    assert clean("05-30 15:16:45.362  3380  3380 I tflite  : count=1 curr=5") == "count=1 curr=5"
    assert clean("   INFO: count=1 curr=5") == "count=1 curr=5"
    assert clean("ERROR: Following operations") == "Following operations"


def test_output_without_figures_has_no_timings():
    out = parse_benchmark_output("error: device offline\n")
    assert not out.has_timings and out.delegation == "unknown" and not out.runs
