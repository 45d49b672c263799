"""benchmark_model's output → typed figures.

The tool prints through TFLite's logger, so lines may carry an ``INFO: `` prefix, a logcat
prefix (``05-30 15:16:45.362  3380  3380 I tflite  : ``) or leading blanks. Times are in
microseconds with C++ stream formatting (``1.04176e+06``). Forms read:

  count=50 first=119212 curr=118055 min=113737 max=124776 avg=119375 std=1948 [p5= median=..]
  Inference timings in us: Init: 870557, First inference: 130565, Warmup (avg): 122373,
      Inference (avg): 119375                                        (one line)
  Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9  (legacy)
  Initialized session in 870.557ms.
  Overall peak memory footprint (MB) via periodic monitoring: 74.6641
  Memory footprint delta from the start of the tool (MB): init=224.859 overall=260.609
  97 operations will run on the GPU, and the remaining 200 operations will run on the CPU.
  Explicitly applied GPU delegate, and the model graph will be completely executed by the
      delegate.                                                      (one line)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PREFIX = re.compile(r"^\s*(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+\S+\s*:\s*)?"
                     r"(?:(?:INFO|WARNING|ERROR|VERBOSE):\s*)?")
_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STATS = re.compile(r"^count=(\d+)((?:\s+\w+=" + _NUM[1:-1] + r")*)\s*$")
_PAIR = re.compile(r"(\w+)=" + _NUM)
_TIMINGS = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
                      + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_LEGACY = re.compile(r"Average inference timings in us: Warmup: " + _NUM + r", Init: " + _NUM
                     + r", Inference: " + _NUM)
_SESSION = re.compile(r"Initialized session in " + _NUM + r"ms")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUM
                    + r" overall=" + _NUM)
_PARTIAL = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) "
                      r"operations will run on the CPU")
_FULL = "the model graph will be completely executed by the delegate"
_UNSUPPORTED_HEAD = "Following operations are not supported by GPU delegate"
_UNSUPPORTED_OP = re.compile(r"^([A-Z][A-Z0-9_]+): (.+?)\s*$")


@dataclass(frozen=True)
class RunStats:
    """One ``count=...`` line, in microseconds."""

    count: int
    values: dict[str, float]  # first, curr, min, max, avg, std, p5, median, p95, ...

    def ms(self, key: str) -> float | None:
        value = self.values.get(key)
        return None if value is None else value / 1000.0


@dataclass
class BenchmarkOutput:
    runs: list[RunStats] = field(default_factory=list)  # warm-up first, then inference
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    peak_memory_mb: float | None = None
    memory_delta_mb: tuple[float, float] | None = None  # (init, overall)
    delegation: str = "unknown"  # "full" | "partial" | "unknown"
    gpu_ops: int | None = None
    cpu_ops: int | None = None
    unsupported: list[str] = field(default_factory=list)  # "OP: reason" lines

    @property
    def inference(self) -> RunStats | None:
        """The timed run: the last count line when there are two or more."""
        return self.runs[-1] if len(self.runs) >= 2 else None

    @property
    def has_timings(self) -> bool:
        return self.inference_avg_us is not None


def clean(line: str) -> str:
    return _PREFIX.sub("", line, count=1).strip()


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    out = BenchmarkOutput()
    in_unsupported = False
    for raw in text.splitlines():
        line = clean(raw)
        if not line:
            continue
        if m := _STATS.match(line):
            values = {k: float(v) for k, v in _PAIR.findall(m[2])}
            out.runs.append(RunStats(int(m[1]), values))
        elif m := _TIMINGS.search(line):
            out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us = (
                float(v) for v in m.groups())
        elif m := _LEGACY.search(line):
            out.warmup_avg_us, out.init_us, out.inference_avg_us = (float(v) for v in m.groups())
        elif (m := _SESSION.search(line)) and out.init_us is None:
            out.init_us = float(m[1]) * 1000.0
        elif m := _PEAK.search(line):
            out.peak_memory_mb = float(m[1])
        elif m := _DELTA.search(line):
            out.memory_delta_mb = (float(m[1]), float(m[2]))
        elif m := _PARTIAL.search(line):
            out.gpu_ops, out.cpu_ops = int(m[1]), int(m[2])
            out.delegation = "partial" if out.cpu_ops else "full"
            in_unsupported = False
        elif _FULL in line:
            out.delegation = "full"
        elif _UNSUPPORTED_HEAD in line:
            in_unsupported = True
        elif in_unsupported and (m := _UNSUPPORTED_OP.match(line)):
            out.unsupported.append(f"{m[1]}: {m[2]}")
        else:
            in_unsupported = False
    if out.unsupported and out.delegation == "unknown":
        out.delegation = "partial"
    return out
