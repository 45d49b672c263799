"""run_bench: exports on demand, then each point on the phone (adb) or on this host.

A point is (variant, queue) at one size and precision. Exports come from the export
library and are reused when the folder's manifest matches (variant, queue, size, weights);
otherwise they are made, with every gate, first. Rows already in the results file are
skipped unless ``force``.

With ``objects`` (K = 1, 2, ...), ``benchmark_model`` (on the phone, or a host binary)
times each graph of the K-object loop beside the step, in one run, and a "frame" row per K
holds their per-frame sum: encode + K x (segment + memorize) (no memorize at queue 1),
against K x step for today's loop. The app's aggregation between segment and memorize runs
on the CPU and is not in that sum (``export/README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..export.api import DEFAULT_CONVERTER, default_folder_name, export_model
from ..export.artifact.manifest import MANIFEST
from ..export.artifact.verify import manifest_problems, verify_files
from ..export.gates.gpu import BufferLimit
from ..files import atomic_path, check_writable, sha256
from ..model.checkpoint import student_for
from ..model.graphs import (
    GRAPH_REVISION,
    SINGLE_GRAPHS,
    multi_graphs,
    shipped_graphs,
    tflite_file,
)
from ..proc import child_setup
from .adb import Adb
from .device import find_binary, run_point
from .devices import device_info, load_profile, profile_mismatches
from .host import run_in_child
from .parse import BenchmarkOutput, parse_benchmark_output
from .results import FRAME, BenchRow, ResultStore, now, plot, sample_stats


@dataclass(frozen=True)
class BenchRequest:
    device: str = "host"  # "host" or a profile in android_benchmark/devices
    variants: tuple[str, ...] = ("mobilenetv2-noaspp",)
    queues: tuple[int, ...] = (2,)
    size: tuple[int, int] = (480, 864)
    precision: str = "fp16"
    engines: tuple[str, ...] = ("tflite", "onnx", "torch")  # host only
    runs: int = 50
    warmup: int = 5
    threads: int = 2
    ckpt: Path | None = None
    exports: Path = Path("export")
    results: Path = Path("results/bench.csv")
    plot: Path | None = None
    force: bool = False
    serial: str | None = None
    adb: str | None = None
    benchmark_binary: str | None = None
    op_profile: bool = False
    cooldown_s: float = 10.0
    timeout_s: float = 600.0
    objects: tuple[int, ...] = ()  # K: time the K-object loop's graphs (benchmark_model)


@dataclass
class BenchReport:
    new: list[BenchRow]
    skipped: list[tuple]
    rows: list[BenchRow]  # everything in the results file
    warnings: list[str] = field(default_factory=list)
    plot: Path | None = None
    objects: list[str] = field(default_factory=list)  # K-object lines of this run's points


def loop_graphs(queue: int) -> tuple[str, ...]:
    """The K-object loop's graphs that run on every frame after the first (``start``
    runs once, on the first)."""
    return tuple(g for g in multi_graphs(queue) if g != "start")


def reusable(manifest: dict, variant: str, queue: int, size: tuple[int, int],
             ckpt_sha256: str | None, graphs: tuple[str, ...] = SINGLE_GRAPHS) -> bool:
    """Whether an existing export is this point's: same student, queue, size and graph
    revision, made by the default converter, with both TFLite precisions and ``graphs``."""
    have_ckpt = (manifest.get("checkpoint") or {}).get("sha256")
    return (manifest.get("graph_revision") == GRAPH_REVISION
            and (manifest.get("converter") or {}).get("name") == DEFAULT_CONVERTER
            and (manifest["variant"], manifest["queue"], list(manifest["size"]), have_ckpt)
            == (variant, queue, list(size), ckpt_sha256)
            and {"fp32", "fp16"} <= set(manifest["precisions"])
            and set(graphs) <= set(manifest["graphs"]))


def _json(path: Path) -> object:
    """The JSON in ``path``, or None when it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def ensure_export(variant: str, queue: int, size: tuple[int, int], ckpt: Path | None,
                  exports: Path, objects: bool = False,
                  gpu_buffer: BufferLimit | None = None) -> tuple[Path, dict]:
    """The export folder for this point: reused if its manifest matches (with the K-object
    graphs when ``objects``), else made."""
    height, width = size
    folder = exports / default_folder_name(variant, queue, height, width)
    chosen = student_for(ckpt, variant)
    want_ckpt = chosen.sha256
    m = _json(folder / MANIFEST)  # one read; an unreadable or invalid one is not reused
    graphs = shipped_graphs(queue, objects)
    if isinstance(m, dict) and not manifest_problems(m) and reusable(m, variant, queue, size,
                                                                     want_ckpt, graphs):
        verify_files(folder, m, m["files"])  # a changed file is refused, never timed
        return folder, m
    result = export_model(chosen, queue, height, width, folder, objects=objects,
                          gpu_buffer=gpu_buffer)
    return folder, result.manifest


def _labels(req: BenchRequest, engine: str) -> tuple[str, str, int | None]:
    """(delegate, precision, threads) of an engine's rows: the phone runs TFLite on the GPU;
    on the host TFLite uses XNNPACK on the requested file, ORT and PyTorch run fp32."""
    if req.device != "host":
        return "gpu", req.precision, None
    if engine == "tflite":
        return "xnnpack", req.precision, req.threads
    if engine == "tflite-gpu":
        return "litert-gpu", req.precision, None
    return "cpu", "fp32", req.threads


def _row_key(req: BenchRequest, variant: str, queue: int, engine: str, info: dict,
             graph: str = "step", objects: int | None = None) -> tuple:
    delegate, precision, threads = _labels(req, engine)
    return (variant, queue, f"{req.size[0]}x{req.size[1]}", precision, engine, delegate,
            threads, req.device, info.get("model", ""), graph, objects)


def _row(req: BenchRequest, variant: str, queue: int, engine: str, info: dict,
         manifest: dict, folder: Path, graph: str = "step", **figures) -> BenchRow:
    delegate, precision, threads = _labels(req, engine)
    base = {k: None for k in ("init_ms", "first_ms", "warmup_ms", "mean_ms", "std_ms",
                              "min_ms", "max_ms", "p50_ms", "p90_ms", "peak_memory_mb",
                              "gpu_ops", "cpu_ops", "thermal_status")}
    base.update(figures)
    return BenchRow(
        variant=variant, queue=queue, size=f"{req.size[0]}x{req.size[1]}",
        precision=precision, engine=engine, delegate=delegate,
        threads=threads, device=req.device,
        device_model=info.get("model", ""), soc=info.get("soc", ""),
        android=info.get("android", ""), runs=req.runs,
        delegation=base.pop("delegation", "cpu"), tools=json.dumps(manifest["tools"]),
        manifest_sha256=sha256(folder / MANIFEST), timestamp=now(), graph=graph, **base)


def frame_rows(rows: dict[str, BenchRow], counts: tuple[int, ...]) -> list[BenchRow]:
    """One "frame" row per K in ``counts``, summed from one run's graph rows (by graph
    name): mean = encode + K x (segment + memorize), the means of runs timed apart (a sum
    of means is the mean of the sum; no other statistic adds up, so they are left out).
    Delegation is the worst of the graphs'; no memory figure (the app holds every graph)."""
    per_object = [g for g in rows if g not in ("step", "encode")]
    out = []
    for k in counts:
        parts = [rows["encode"], *[rows[g] for g in per_object]]
        mean = rows["encode"].mean_ms + k * sum(rows[g].mean_ms for g in per_object)
        delegation = next((d for d in ("partial", "unknown", "cpu")
                           if any(r.delegation == d for r in parts)), "full")
        thermal = [r.thermal_status for r in parts if r.thermal_status is not None]
        first = rows["encode"]
        out.append(dataclasses.replace(
            first, graph=FRAME, objects=k, mean_ms=mean, delegation=delegation,
            init_ms=None, first_ms=None, warmup_ms=None, std_ms=None, min_ms=None,
            max_ms=None, p50_ms=None, p90_ms=None, peak_memory_mb=None, gpu_ops=None,
            cpu_ops=None, thermal_status=max(thermal) if thermal else None, log_file="",
            timestamp=now()))
    return out


def objects_lines(step: BenchRow, frames: list[BenchRow]) -> list[str]:
    """Each frame row of one run against K x the step timed in the same run."""
    lines = []
    for r in frames:
        today = r.objects * step.mean_ms
        line = (f"{r.variant} q{r.queue} {r.size} {r.precision} on {r.device}, K={r.objects}: "
                f"encode once + K x (segment + memorize) = {r.mean_ms:.1f} ms per frame; "
                f"K x step = {today:.1f} ms")
        if r.delegation == step.delegation and r.delegation in ("full", "cpu"):
            line += f"; new/today {r.mean_ms / today:.3f}"
        else:  # a graph only partly on the GPU: no ratio between unlike figures
            line += (f" (delegation: loop {r.delegation}, step {step.delegation}; no ratio; "
                     "see the graph rows)")
        lines.append(line)
    return lines


def _from_output(out: BenchmarkOutput) -> dict:
    ms = (lambda v: None if v is None else v / 1000.0)  # noqa: E731
    run = out.inference
    return {"init_ms": ms(out.init_us), "first_ms": ms(out.first_us),
            "warmup_ms": ms(out.warmup_avg_us), "mean_ms": ms(out.inference_avg_us),
            "std_ms": run.ms("std") if run else None, "min_ms": run.ms("min") if run else None,
            "max_ms": run.ms("max") if run else None,
            "p50_ms": run.ms("median") if run else None, "p90_ms": None,
            "peak_memory_mb": out.peak_memory_mb, "delegation": out.delegation,
            "gpu_ops": out.gpu_ops, "cpu_ops": out.cpu_ops}


def _host_info() -> dict:
    import platform

    return {"model": platform.node() or "host", "soc": platform.processor() or
            platform.machine(), "android": ""}


def run_local_benchmark_model(binary: Path, model: Path, threads: int, runs: int,
                              warmup: int, timeout_s: float,
                              signature: str = "step") -> BenchmarkOutput:
    """A user-supplied Linux x86-64 benchmark_model, for the host's TFLite column: one
    signature (graph) of the export's model."""
    cmd = [str(binary), f"--graph={model}", f"--num_threads={threads}",
           f"--num_runs={runs}", f"--warmup_runs={warmup}",
           "--report_peak_memory_footprint=true",
           f"--signature_to_run_for_benchmark={signature}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=child_setup())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run {binary}: {exc}") from None
    out = parse_benchmark_output(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr).strip()[-400:]
    if proc.returncode != 0:
        raise UserError(f"{binary} failed (exit {proc.returncode}): {tail}")
    if not out.has_timings:  # it ran, but printed no benchmark_model timings
        raise UserError(f"{binary} ran (exit 0) but printed no timings benchmark_model "
                        "prints (\"Inference timings in us\"); is it TensorFlow's "
                        f"benchmark_model? Its output ends: {tail or '(nothing)'}")
    return out


def _host_op_profile(req: BenchRequest, folder: Path, model: Path) -> Path:
    """LiteRT per-op times of the step on this host (``bench/op_profile.py``), as a file."""
    from .op_profile import format_profile, profile_ops

    log = req.results.parent / f"{req.results.stem}_logs" / (
        f"{folder.name}_{req.precision}_host_ops.md")
    log.parent.mkdir(parents=True, exist_ok=True)
    table = format_profile(profile_ops(model, req.threads, runs=min(req.runs, 5)))
    with atomic_path(log) as tmp:
        tmp.write_text(table + "\n")
    return log


def run_bench(req: BenchRequest,
              progress: Callable[[int, int, str], None] | None = None) -> BenchReport:
    """Measure every point; ``progress(done, total, label)`` is called before each."""
    store = ResultStore(req.results)  # refuses a foreign or unwritable results file now
    if req.plot is not None:
        check_writable(req.plot, "--plot")
        if req.plot.resolve() in (store.csv_path.resolve(), store.json_path.resolve()):
            raise UserError(f"--plot {req.plot} is the results file; give the plot a .png name")
    check_writable(req.exports, "--exports", folder=True)
    report = BenchReport([], [], store.rows)
    adb = binary = None
    buffer = None  # an export made for the phone holds the profile's GPU buffer limit
    if req.device == "host":
        info = _host_info()
        binary = find_binary(req.benchmark_binary) if req.benchmark_binary else None
    else:
        profile = load_profile(req.device)
        buffer = BufferLimit(profile.gpu_max_buffer_bytes, profile.gpu_max_buffer_source,
                             profile.name)
        binary = find_binary(req.benchmark_binary)
        adb = Adb.connect(req.adb, req.serial)
        info = device_info(adb)
        report.warnings += [f"WARNING: this phone is not a {req.device}: {p}"
                            for p in profile_mismatches(info, profile)]
    if req.objects and adb is None and set(req.engines) - {"tflite"}:
        report.warnings.append(
            "WARNING: --objects times every graph with benchmark_model: the TFLite file only; "
            f"{', '.join(e for e in req.engines if e != 'tflite')} not run")
    if req.objects and adb is None and binary is None:
        raise UserError("--objects times each graph of the K-object loop with benchmark_model: "
                        "on a phone (--device s22), or on this host with --benchmark-binary "
                        "(a Linux x86-64 benchmark_model). Without one, the host's K-object "
                        "loop is timed whole, aggregation included, by python "
                        "benchmarks/objects_latency.py")
    points = [(v, q) for v in req.variants for q in req.queues]
    for index, (variant, queue) in enumerate(points):
        label = f"{variant} q{queue}"
        if progress:
            progress(index, len(points), label)
        # with --objects every graph is timed by benchmark_model, the step beside them
        engines = ["tflite"] if adb or req.objects else list(req.engines)
        graphs = ("step", *loop_graphs(queue)) if req.objects else ("step",)
        jobs = [(e, g) for e in engines for g in graphs]
        keys = {(e, g): _row_key(req, variant, queue, e, info, g) for e, g in jobs}
        todo = [j for j in jobs if req.force or not store.has(keys[j])]
        frames = [_row_key(req, variant, queue, "tflite", info, FRAME, k) for k in req.objects]
        if req.objects and (todo or not all(store.has(k) for k in frames)):
            todo = jobs  # a frame's sum comes from one run of one export, never mixed
        report.skipped += [keys[j] for j in jobs if j not in todo]
        if not todo:
            continue
        folder, manifest = ensure_export(variant, queue, req.size, req.ckpt, req.exports,
                                         objects=bool(req.objects), gpu_buffer=buffer)
        timed: dict[str, BenchRow] = {}
        for engine, graph in todo:
            model = folder / tflite_file(req.precision)
            if adb is not None:
                if report.new:
                    time.sleep(req.cooldown_s)  # let the phone cool between points
                run = run_point(adb, binary, model, f"{folder.name}_{model.name}",
                                fp16=req.precision == "fp16", runs=req.runs,
                                warmup=req.warmup, op_profile=req.op_profile,
                                timeout_s=req.timeout_s, signature=graph)
                figures = _from_output(run.output)
                figures["thermal_status"] = run.thermal_status
                row = _row(req, variant, queue, engine, info, manifest, folder, graph,
                           **figures)
                log = req.results.parent / f"{req.results.stem}_logs" / (
                    f"{folder.name}_{model.stem}_{graph}_{req.device}_{adb.serial}.txt")
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"$ {run.command}\n{run.log}\n")
                row.log_file = str(log)
            elif engine == "tflite" and binary is not None:
                out = run_local_benchmark_model(binary, model, req.threads, req.runs,
                                                req.warmup, req.timeout_s, graph)
                row = _row(req, variant, queue, engine, info, manifest, folder, graph,
                           **_from_output(out))
            else:
                m = run_in_child(folder, engine, req.precision, req.threads, req.warmup,
                                 req.runs, req.timeout_s)
                on_gpu = engine == "tflite-gpu"
                row = _row(req, variant, queue, engine, info, manifest, folder,
                           init_ms=m["init_ms"], first_ms=m["first_ms"],
                           warmup_ms=m["warmup_ms"], peak_memory_mb=m["peak_memory_mb"],
                           delegation="full" if on_gpu else "cpu",
                           **sample_stats(m["times_ms"]))
                row.gpu_device = m.get("gpu_device", "")
                if engine == "tflite" and req.op_profile:
                    row.log_file = str(_host_op_profile(req, folder, model))
            if row.delegation == "partial":
                report.warnings.append(
                    f"WARNING: {label} {graph}: only {row.gpu_ops} ops ran on the GPU, "
                    f"{row.cpu_ops} on the CPU; the point is flagged 'partial' and kept off "
                    "the GPU curve")
            store.add(row)
            report.new.append(row)
            timed[graph] = row
        if req.objects:  # this run's frames replace every earlier frame of the point
            point = keys["tflite", "step"][:9]
            made = frame_rows(timed, req.objects)
            earlier = frozenset(r.key() for r in store.rows if r.graph == FRAME
                                and r.key()[:9] == point and r.objects not in req.objects)
            for row in made:
                store.add(row, drop=earlier)
            report.objects += objects_lines(timed["step"], made)
    if progress:
        progress(len(points), len(points), "done")
    report.rows = store.rows
    if req.plot is not None and store.rows:
        plot(store.rows, req.plot)
        report.plot = req.plot
    return report

