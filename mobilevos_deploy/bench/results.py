"""Benchmark rows: one schema for phone and host, appended to CSV + JSON, tabled, plotted."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import tempfile
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from ..errors import UserError
from ..files import atomic_path, check_writable

FPS30_MS = 1000.0 / 30.0
FRAME = "frame"  # BenchRow.graph of a per-frame sum over the K-object loop's graphs


@dataclass
class BenchRow:
    variant: str
    queue: int
    size: str  # "480x864"
    precision: str  # fp32 | fp16 (on a phone: GPU precision loss not allowed / allowed)
    engine: str  # tflite | tflite-gpu | onnx | torch
    delegate: str  # gpu (phone) | litert-gpu (host Vulkan) | xnnpack | cpu
    threads: int | None
    device: str  # "host" or the profile name
    device_model: str
    soc: str
    android: str
    init_ms: float | None
    first_ms: float | None
    warmup_ms: float | None
    mean_ms: float | None
    std_ms: float | None
    min_ms: float | None
    max_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    peak_memory_mb: float | None
    delegation: str  # full | partial | cpu | unknown
    gpu_ops: int | None
    cpu_ops: int | None
    thermal_status: int | None
    runs: int
    tools: str  # JSON of tool versions
    manifest_sha256: str
    timestamp: str
    log_file: str = ""  # the raw benchmark_model output of a phone point (op profile too)
    gpu_device: str = ""  # tflite-gpu on the host: the Vulkan device, "software" if it is one
    # which exported graph was timed: "step" (the paper's single-object graph), or one of
    # the K-object loop's (encode | segment | memorize); "frame" is not timed but summed
    # from one run's graph rows: encode + K x (segment + memorize), for K = ``objects``
    graph: str = "step"
    objects: int | None = None

    def key(self) -> tuple:
        return (self.variant, self.queue, self.size, self.precision, self.engine,
                self.delegate, self.threads, self.device, self.device_model, self.graph,
                self.objects)

    @property
    def label(self) -> str:
        """The graph column: step, encode, ..., or "K=3 frame" for a summed row."""
        return f"K={self.objects} frame" if self.graph == FRAME else self.graph


FIELDS = [f.name for f in fields(BenchRow)]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sample_stats(times_ms: list[float]) -> dict[str, float]:
    """mean / std / min / max / p50 / p90 of per-run times (p90 by nearest rank)."""
    ordered = sorted(times_ms)
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]
    return {"mean_ms": statistics.fmean(ordered),
            "std_ms": statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
            "min_ms": ordered[0], "max_ms": ordered[-1],
            "p50_ms": statistics.median(ordered), "p90_ms": p90}


class ResultStore:
    """``results.csv`` and ``results.json`` side by side; rows keyed by what was measured."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = Path(csv_path)
        self.json_path = self.csv_path.with_suffix(".json")
        for path in (self.csv_path, self.json_path):
            check_writable(path, "results file")
        self.rows: list[BenchRow] = []
        csv_rows = _read_csv(self.csv_path) if self.csv_path.exists() else None
        if self.json_path.exists():
            self.rows = _read_json(self.json_path)
        # rows only the CSV has (its JSON twin removed, or rows merged into the CSV from
        # another machine) are kept, never dropped by the next write
        known = {r.key() for r in self.rows}
        self.rows += [r for r in csv_rows or [] if r.key() not in known]

    def has(self, row_key: tuple) -> bool:
        return any(r.key() == row_key for r in self.rows)

    def add(self, row: BenchRow, drop: frozenset[tuple] = frozenset()) -> None:
        """Replace a row with the same key, else append; rows keyed in ``drop`` are removed
        in the same write; both files rewritten atomically."""
        self.rows = [r for r in self.rows if r.key() != row.key() and r.key() not in drop]
        self.rows.append(row)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in self.rows)
        text = json.dumps([asdict(r) for r in self.rows], indent=1) + "\n"
        try:
            with atomic_path(self.csv_path) as tmp:
                tmp.write_text(buf.getvalue())
            with atomic_path(self.json_path) as tmp:
                tmp.write_text(text)
        except OSError as exc:  # the measurement is not lost: it goes where it can
            fd, rescue = tempfile.mkstemp(prefix="mvos-bench-rows.", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            raise UserError(f"cannot write {self.csv_path} ({exc.strerror}); every row so far, "
                            f"this one included, is in {rescue}") from None


REQUIRED = [f.name for f in fields(BenchRow) if f.default is MISSING]


def _foreign(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a mvos-bench results file ({why}); refusing to rewrite "
                     "it. Choose another --results (its .csv and .json twin are ours to "
                     "write), or move that file away.")


def _typed(row: dict[str, str]) -> dict:
    """A CSV row's strings as the BenchRow field types ('' is None where None is allowed)."""
    out: dict = {}
    for f in fields(BenchRow):
        text = row.get(f.name, "")
        kind = str(f.type)
        if text == "" and "None" in kind:
            out[f.name] = None
        elif kind.startswith("int"):
            out[f.name] = int(text)
        elif kind.startswith("float"):
            out[f.name] = float(text)
        elif f.name in row or f.default is MISSING:
            out[f.name] = text
    return out


def _read_csv(path: Path) -> list[BenchRow]:
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if not header or set(header) - set(FIELDS) or set(REQUIRED) - set(header):
                raise _foreign(path, f"its header is {', '.join(header[:4]) or 'empty'}"
                               f"{' ...' if len(header) > 4 else ''}")
            return [BenchRow(**_typed(row)) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as exc:
        raise _foreign(path, f"unreadable: {exc}") from None


def _read_json(path: Path) -> list[BenchRow]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _foreign(path, f"unreadable: {exc}") from None
    if not isinstance(data, list) or not all(
            isinstance(r, dict) and set(REQUIRED) <= set(r) <= set(FIELDS) for r in data):
        raise _foreign(path, "not a list of benchmark rows")
    try:
        return [BenchRow(**r) for r in data]
    except TypeError as exc:
        raise _foreign(path, str(exc)) from None


def format_table(rows: list[BenchRow]) -> str:
    def f(v: float | None, spec: str = ".1f") -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'variant':<19} {'q':>3} {'size':>8} {'prec':>4} {'engine':<14} {'graph':<11} "
            f"{'mean ms':>8} {'p50':>8} {'min':>8} {'std':>6} {'peak MB':>8}  delegation")
    lines = [head, "-" * len(head)]
    order = {g: i for i, g in enumerate(("step", "encode", "segment", "memorize", FRAME))}
    for r in sorted(rows, key=lambda r: (r.device, r.variant, r.engine, r.precision, r.queue,
                                         order.get(r.graph, 9), r.objects or 0)):
        deleg = r.delegation + (f" ({r.gpu_ops} GPU / {r.cpu_ops} CPU ops)"
                                if r.delegation == "partial" and r.gpu_ops is not None else "")
        if r.gpu_device:
            deleg += f" on {r.gpu_device}" + (": NOT a GPU latency"
                                               if "software" in r.gpu_device else "")
        lines.append(f"{r.variant:<19} {r.queue:>3} {r.size:>8} {r.precision:>4} "
                     f"{r.engine + '/' + r.delegate:<14} {r.label:<11} {f(r.mean_ms):>8} "
                     f"{f(r.p50_ms):>8} {f(r.min_ms):>8} {f(r.std_ms):>6} "
                     f"{f(r.peak_memory_mb):>8}  {deleg}")
    return "\n".join(lines)


def plot(rows: list[BenchRow], path: Path) -> None:
    """Step latency vs queue length per variant and engine, with the 30 FPS line (paper
    Fig. 4); rows of other graphs are not drawn. Points not fully delegated to the GPU are
    drawn apart (red x), never joined to a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple, list[BenchRow]] = {}
    for r in rows:
        if r.mean_ms is not None and r.graph == "step":
            device = r.device + (" software Vulkan, not a GPU" if "software" in r.gpu_device
                                 else "")
            series.setdefault((device, r.variant, r.engine, r.delegate, r.precision),
                              []).append(r)
    for (device, variant, engine, delegate, precision), items in sorted(series.items()):
        clean = sorted((r for r in items if r.delegation != "partial"), key=lambda r: r.queue)
        bad = [r for r in items if r.delegation == "partial"]
        if clean:
            ax.plot([r.queue for r in clean], [r.mean_ms for r in clean], marker="o", ms=3,
                    label=f"{variant} {engine}/{delegate} {precision} ({device})")
        if bad:
            ax.scatter([r.queue for r in bad], [r.mean_ms for r in bad], marker="x", c="red",
                       label=f"{variant}: partial GPU delegation")
    ax.axhline(FPS30_MS, color="gray", ls="--", lw=1, label="30 FPS (33.3 ms)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("queue length n (first frame + n-1 recent)")
    ax.set_ylabel("step latency, mean (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
