"""mvos-bench: step latency on a phone's GPU over adb, or on this host (the default)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..bench.api import BenchRequest, run_bench
from ..bench.host import ENGINES
from ..bench.results import format_table
from ..model.checkpoint import SEEDED
from ..model.config import DEFAULT_VARIANT, get_variant, variant_names
from . import FiniteFloat, parse_counts, parse_queues, parse_size, user_errors

MAX_OBJECTS = 16


def _list(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if not items or bad:
        raise click.BadParameter(f"unknown {what} {bad or text!r}; choose from "
                                 f"{', '.join(allowed)}")
    return items


@click.command()
@click.option("--device", default="host", show_default=True,
              help="'host' (this machine, no phone) or a device profile such as s22.")
@click.option("--serial", default=None, help="adb serial when several phones are attached.")
@click.option("--variant", "variants", default=DEFAULT_VARIANT, show_default=True,
              help=f"One of {', '.join(variant_names())}, a comma list, or 'all'.")
@click.option("--queue", "queues", default="2", show_default=True, help="2, 1-20 or 1,2,5.")
@click.option("--size", default="480x864", show_default=True)
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16",
              show_default=True, help="TFLite file; on the GPU also whether precision loss "
              "is allowed.")
@click.option("--engines", default="tflite,onnx,torch", show_default=True,
              help=f"Host engines, side by side: {','.join(ENGINES)} (tflite-gpu: "
              "LiteRT's GPU accelerator on the Vulkan device present).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1),
              help="Host threads per engine.")
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
              help="Student checkpoint (default: the trained default student for "
              "mobilenetv2-noaspp, the seeded one for other variants; 'seeded': the seeded "
              "untrained student).")
@click.option("--exports", type=click.Path(file_okay=False), default="export",
              show_default=True, help="Where exports are made or reused.")
@click.option("--results", "results_file", type=click.Path(dir_okay=False),
              default="results/bench.csv", show_default=True,
              help="CSV to append to (a .json twin is written beside it).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="PNG of latency vs queue with the 30 FPS line.")
@click.option("--force", is_flag=True, help="Re-measure points already in the results.")
@click.option("--benchmark-binary", default=None, help="benchmark_model binary (Android "
              "aarch64 for a phone, Linux x86-64 for the host); or $MVOS_BENCHMARK_MODEL.")
@click.option("--adb", "adb_path", default=None, help="adb client (default: PATH or $MVOS_ADB).")
@click.option("--op-profile", is_flag=True, help="Per-op times: benchmark_model "
              "--enable_op_profiling on the phone, LiteRT one-op timing on the host; kept in "
              "the results' _logs folder.")
@click.option("--cooldown", type=FiniteFloat(0.0, 3600.0), default=10.0, show_default=True,
              help="Seconds between phone points.")
@click.option("--objects", default=None, help="K objects per frame, e.g. 3, 1-4 or 1,2,4: "
              "benchmark_model times each graph of the K-object loop (encode, segment, "
              "memorize) beside the step, and a row per K sums encode + K x (segment + "
              "memorize) per frame, against K x step. On a phone, or on this host with "
              "--benchmark-binary.")
@user_errors
def main(device: str, serial: str | None, variants: str, queues: str, size: str,
         precision: str, engines: str, runs: int, warmup: int, threads: int,
         ckpt: str | None, exports: str, results_file: str, plot_file: str | None,
         force: bool, benchmark_binary: str | None, adb_path: str | None, op_profile: bool,
         cooldown: float, objects: str | None) -> None:
    names = tuple(variant_names()) if variants == "all" else \
        _list(variants, tuple(variant_names()), "variant")
    for name in names:
        get_variant(name)
    if ckpt and ckpt != SEEDED and not Path(ckpt).is_file():
        raise click.BadParameter(f"{ckpt}: no such checkpoint file (leave out --ckpt for the "
                                 f"trained default student, or --ckpt {SEEDED})",
                                 param_hint="--ckpt")
    req = BenchRequest(
        device=device, variants=names, queues=tuple(parse_queues(queues)),
        size=parse_size(size), precision=precision,
        engines=_list(engines, ENGINES, "engine"), runs=runs, warmup=warmup,
        threads=threads, ckpt=Path(ckpt) if ckpt else None, exports=Path(exports),
        results=Path(results_file), plot=Path(plot_file) if plot_file else None, force=force,
        serial=serial, adb=adb_path, benchmark_binary=benchmark_binary,
        op_profile=op_profile, cooldown_s=cooldown,
        objects=tuple(parse_counts(objects, "number of objects", MAX_OBJECTS)) if objects
        else ())
    with click.progressbar(length=len(names) * len(req.queues), label="benchmark",
                           file=sys.stderr,
                           item_show_func=lambda label: label) as bar:
        report = run_bench(req, progress=lambda done, total, label: (
            bar.update(done - bar.pos, label)))
    for warning in report.warnings:
        click.secho(warning, err=True, fg="red", bold=True)
    shown = [r for r in report.rows if r.device == device and r.variant in names
             and r.queue in req.queues]
    click.echo(format_table(shown))
    for line in report.objects:
        click.echo(line)
    click.echo(f"{len(report.new)} point(s) measured, {len(report.skipped)} already in "
               f"{req.results} (use --force to re-measure)")
    for row in report.new:
        if row.log_file:
            click.echo(f"log: {row.log_file}")
    if report.plot:
        click.echo(f"plot: {report.plot}")
