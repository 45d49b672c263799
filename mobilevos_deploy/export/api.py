"""export_model: one (variant, queue, size) → ONNX + TFLite fp32/fp16, gated, with a manifest.

Everything is built in a staging folder beside the target and moved into place only when
every gate passed, so a failed or interrupted export leaves no partial artifacts and a
rerun replaces the old folder whole.

The gates (all figures go to the manifest):
  step_parity        PyTorch vs ONNX Runtime vs TFLite fp32 on one step: prob, every
                     next-state tensor and the memory read-out (from the probe graph)
  memory_dependence  zeroing the memory moves the mask by far more than the tolerances
  rollout_*          closed-loop rollouts, each runtime feeding back its own state
                     (ONNX Runtime and TFLite fp32: pixel by pixel against PyTorch)
  rollout_tflite_fp16  fp16 weights: every step read against memory the runtime wrote
                     itself, and the closed loop's J against the clip's truth
                     (parity.fp16_gate, which says why fp16 is not judged pixel by pixel
                     in a closed loop)
  rollout_fp16_compute  the same for the student with every activation in fp16, as a
                     phone GPU runs it with precision loss allowed (fp16_compute.py)
  gpu_parity         every shipped TFLite file on LiteRT's GPU accelerator: fully
                     delegated, and one init and one step at the step-parity limits
                     (gpu_gate.py; rollout_gpu_fp16 too where the device has fp16)
  gpu_delegate       TensorFlow 2.17's analyzer on every shipped TFLite file, the second,
                     independent delegation verdict (gpu_check.py)

The K-object graphs (encode, start, segment, memorize; loop.py) have gates of their own,
on a generated clip of two objects that touch and occlude each other:
  objects_parity     PyTorch vs ONNX Runtime vs TFLite fp32, each graph on one realistic
                     input (from the two-object rollout), at the step-parity limits
  objects_dependence zeroing the memory moves segment's mask, and zeroing the other
                     objects' channel moves memorize's memory values
  rollout_objects_*  the two-object loop of ONNX Runtime, TFLite fp32 and LiteRT's GPU
                     accelerator (fp32): every frame on its own memory write pixel by
                     pixel, the closed loop by IoU (parity.objects_fp32_gate; why in
                     _objects_rollout_gates); TFLite fp16 as parity.fp16_gate judges it
  gpu_parity         covers their files too
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.synthetic import scene_clip
from ..errors import UserError
from ..files import make_temp_dir
from ..model.profile import check_memory
from ..model.student import Student
from .convert import Conversion
from .fp16_compute import half_runners
from .gpu_check import GpuReport, check_gpu
from .gpu_gate import GpuInputs, gpu_run_gate
from .graphs import (
    GRAPH_REVISION,
    NEXT,
    SINGLE_GRAPHS,
    GraphSpec,
    export_onnx,
    graph_module,
    graph_specs,
    multi_graphs,
)
from .loop import looped_objects, rollout_objects
from .manifest import (
    MANIFEST,
    SCHEMA,
    feeds,
    file_table,
    io_spec,
    sha256,
    tool_versions,
    verify_written,
)
from .parity import (
    GateError,
    GateResult,
    State,
    fp16_gate,
    looped_steps,
    nchw_clip,
    objects_fp32_gate,
    rollout,
    rollout_gate,
    rollout_states,
    step_parity,
)
from .runtimes import (
    GivenProbRunner,
    Runner,
    check_io,
    exact_given_prob,
    exact_runner,
    onnx_runner,
    tflite_runner,
    torch_runner,
)
from .verify import foreign_entries

ROLLOUT_FRAMES = 31
OBJECT_FRAMES = 12  # the two-object rollout (each frame runs 5 graphs)
OBJECTS_SEED = 4  # mvos-synth --kind scene: objects that touch and occlude each other
PRECISIONS = ("fp32", "fp16")


def shipped_graphs(queue: int, objects: bool = True) -> tuple[str, ...]:
    """The graphs an export ships: init and step, and the K-object loop's unless
    ``objects`` is off (mvos-export --single-object)."""
    return SINGLE_GRAPHS + (multi_graphs(queue) if objects else ())


@dataclass
class _Objects:
    """The two-object reference: PyTorch's K-object loop over the same graph modules."""

    frames: np.ndarray  # T x 3 x H x W
    masks0: np.ndarray  # K x H x W, the given first masks
    truth: np.ndarray  # K x T-1 x H x W
    probs: np.ndarray  # K x T-1 x H x W, PyTorch's closed loop
    states: list  # the states each frame of it was read against
    inputs: dict[str, dict[str, np.ndarray]]  # one realistic input per graph
    expected: dict[str, dict[str, np.ndarray]]  # PyTorch on them
    exact: dict[str, dict[str, np.ndarray]]  # float64 on them
    queue: int


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: dict
    gates: list[GateResult]
    gpu: dict[str, GpuReport] | None  # None when the check could not run (and was allowed)
    warnings: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, and "total"


def default_folder_name(variant: str, queue: int, height: int, width: int) -> str:
    return f"{variant}_q{queue}_{height}x{width}"


@dataclass
class _Reference:
    """What the TFLite and GPU gates compare against, computed while TensorFlow converts.
    ``probs`` (the PyTorch rollout) comes last; the GPU gate, which starts earlier, waits
    for it only where it needs it."""

    frames: np.ndarray
    masks: np.ndarray
    inputs: dict[str, np.ndarray]  # one realistic step input
    expected: dict[str, np.ndarray]  # PyTorch probe outputs on it
    probs: np.ndarray | None  # PyTorch closed-loop rollout
    states: list[State] | None  # the state each step of that rollout read
    init_inputs: dict[str, np.ndarray]  # the first frame and mask
    init_expected: dict[str, np.ndarray]  # PyTorch init outputs on them
    exact: dict[str, np.ndarray] | None = None  # the probe in float64 on ``inputs``
    objects: _Objects | None = None  # with the K-object graphs
    exact_given_prob: GivenProbRunner | None = None  # the probe in float64, a given prob
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.probs is not None:
            self.ready.set()

    def set_probs(self, probs: np.ndarray, states: list[State]) -> None:
        self.probs, self.states = probs, states
        self.ready.set()

    def wait_probs(self) -> tuple[np.ndarray, list[State]]:
        self.ready.wait()
        if self.probs is None or self.states is None:
            raise UserError("the PyTorch reference rollout did not complete")
        return self.probs, self.states

    def for_gpu(self) -> GpuInputs:
        objects = self.objects
        return GpuInputs(self.init_inputs, self.init_expected, self.inputs, self.expected,
                         self.frames, self.masks[0], self.masks[1:], self.wait_probs,
                         {} if objects is None else {
                             g: (objects.inputs[g], objects.expected[g]) for g in objects.inputs},
                         None if objects is None else (objects.frames, objects.masks0,
                                                       objects.probs, objects.queue,
                                                       objects.states))


def _objects_reference(student: Student, queue: int, specs: dict[str, GraphSpec],
                       height: int, width: int) -> _Objects:
    """The two-object clip, PyTorch's loop on it, and one realistic input per graph: frame
    4 of that loop (its memory filled by the loop itself)."""
    clip = scene_clip(OBJECT_FRAMES, height, width, seed=OBJECTS_SEED)
    labels = clip.ids().numpy()
    frames = clip.frames.numpy()
    masks = np.stack([(labels == k).astype(np.float32) for k in (1, 2)], axis=1)  # T x K
    graphs = multi_graphs(queue)
    run = {g: torch_runner(graph_module(student, queue, g), specs[g]) for g in graphs}
    probs, read = rollout_objects(run, queue, frames, masks[0])
    t = 4
    enc = run["encode"]({"frame": frames[t : t + 1]})
    state = read[t - 1][0]
    inputs = {"encode": {"frame": frames[t : t + 1]},
              "start": {"key": enc["key"], "f16": enc["f16"], "mask": masks[0, :1, None],
                        "others": masks[0, 1:2, None]},
              "segment": {**enc, **state}}
    if "memorize" in graphs:
        prob = run["segment"](inputs["segment"])["prob"]
        inputs["memorize"] = {"key": enc["key"], "f16": enc["f16"], "prob": prob,
                              "others": probs[1:2, t - 1, None], **state}
    expected = {g: run[g](inputs[g]) for g in graphs}
    exact = {g: exact_runner(graph_module(student, queue, g), specs[g])(inputs[g])
             for g in graphs}
    return _Objects(frames, masks[0], masks[1:].transpose(1, 0, 2, 3), probs, read, inputs,
                    expected, exact, queue)


def _objects_parity(objects: _Objects, specs: dict[str, GraphSpec],
                    runners: dict[str, dict[str, Runner]]) -> GateResult:
    """``runners``: runtime → graph → runner; every graph's outputs against PyTorch."""
    gate = GateResult("objects_parity", True)
    for graph in objects.inputs:
        one = step_parity(specs[graph], lambda _, g=graph: objects.expected[g],
                          {rt: run[graph] for rt, run in runners.items()},
                          objects.inputs[graph], prob_atol=1e-4, state_rtol=1e-4,
                          exact=objects.exact[graph])
        gate.passed = gate.passed and one.passed
        gate.figures.update({f"{graph}.{k}": v for k, v in one.figures.items()})
        gate.offending += [f"{graph:<9} {row}" for row in one.offending]
    return gate


def _objects_dependence(student: Student, queue: int, specs: dict[str, GraphSpec],
                        objects: _Objects) -> GateResult:
    """The two-object gates could see a memory bug: zeroing the memory moves segment's mask.

    How far zeroing ``others`` moves memorize's values is reported, not gated: it is the
    network's own choice. A student trained on single objects only never saw the channel
    and Adam's weight decay (a full learning-rate step for a weight with no other gradient)
    drove its weights to ~1e-9, so it ignores it (measured on mvos-synth-noaspp-v2: 9e-7);
    a graph that dropped the channel could then not differ from PyTorch either."""
    gate = GateResult("objects_dependence", True)
    segment = torch_runner(graph_module(student, queue, "segment"), specs["segment"])
    seg_in = objects.inputs["segment"]
    blank = dict(seg_in, mem_values=np.zeros_like(seg_in["mem_values"]))
    moved = float(np.max(np.abs(segment(blank)["prob"] - objects.expected["segment"]["prob"])))
    gate.figures["segment_max_prob_change"] = moved
    if not moved > 1e-2:
        gate.passed = False
        gate.offending.append(f"zeroing mem_values moved segment's prob by only {moved:.3g} "
                              "(need > 0.01)")
    if "memorize" in objects.inputs:
        memorize = torch_runner(graph_module(student, queue, "memorize"), specs["memorize"])
        mem_in = objects.inputs["memorize"]
        alone = memorize(dict(mem_in, others=np.zeros_like(mem_in["others"])))
        key = NEXT + "mem_values"
        changed = float(np.max(np.abs(alone[key] - objects.expected["memorize"][key])
                               / (1.0 + np.abs(objects.expected["memorize"][key]))))
        gate.figures["memorize_max_value_change"] = changed
    return gate


def _objects_rollout_gates(name: str, objects: _Objects, queue: int,
                           run: dict[str, Runner], fp16: bool) -> GateResult:
    """A runtime's two-object loop against PyTorch's, the objects' frames side by side.

    fp16: as ``parity.fp16_gate`` judges fp16. fp32: every frame read against memory the
    runtime wrote itself from the reference's (``loop.looped_objects``) agrees pixel by
    pixel (max prob error 1e-3, IoU >= 0.999 where the reference is sure), and the closed
    loop's masks agree (IoU >= 0.999 where the reference is sure; its max prob error is
    reported). Why not the closed loop's max error, as one object is judged: STCN's
    aggregation takes log(p / (1 - p)) of probabilities near 1, where fp32 holds p in
    steps of 6e-8 and one step moves the log-odds by up to 0.7; where two objects both
    claim a pixel, a last-bit difference of a correct conversion then moves the memory
    written there, and at 480x864 the trained student's closed loops (TFLite fp32 and
    LiteRT's GPU accelerator) ended 1.07e-3 and 1.09e-3 from PyTorch's within 11 frames. A
    conversion bug is wrong in one step already, which the looped frames see at the
    single-object limit; drift that matters moves masks, which the closed loop's IoU sees.
    """
    closed, _ = rollout_objects(run, queue, objects.frames, objects.masks0)
    looped = looped_objects(run, queue, objects.frames, objects.masks0, objects.states)
    ref = objects.probs.reshape(-1, *objects.probs.shape[2:])
    if fp16:
        return fp16_gate(name, ref, looped.reshape(ref.shape), closed.reshape(ref.shape),
                         objects.truth.reshape(ref.shape))
    return objects_fp32_gate(name, ref, looped.reshape(ref.shape), closed.reshape(ref.shape))


def _reference_inputs(student: Student, queue: int, specs: dict[str, GraphSpec], height: int,
                      width: int, objects: bool) -> _Reference:
    """The clip, the init on its first frame, and a realistic step: memory filled by a few
    steps of the clip, with PyTorch's probe outputs on it (no rollout yet)."""
    frames, masks = nchw_clip(ROLLOUT_FRAMES, height, width, seed=1)
    init_t = torch_runner(graph_module(student, queue, "init"), specs["init"])
    step_t = torch_runner(graph_module(student, queue, "step"), specs["step"])
    probe_t = torch_runner(graph_module(student, queue, "probe"), specs["probe"])
    state_names = specs["step"].input_names[1:]

    # a realistic state: memory filled by a few steps of the clip
    init_inputs = {"frame": frames[:1], "mask": masks[:1, None]}
    out = init_expected = init_t(init_inputs)
    state = {n: out[n] for n in state_names}
    for t in range(1, 4):
        out = step_t({"frame": frames[t : t + 1], **state})
        state = {n: out[NEXT + n] for n in state_names}
    inputs = {"frame": frames[4:5], **state}
    exact = exact_runner(graph_module(student, queue, "probe"), specs["probe"])(inputs)
    return _Reference(frames, masks, inputs, probe_t(inputs), None, None, init_inputs,
                      init_expected, exact,
                      _objects_reference(student, queue, specs, height, width)
                      if objects else None,
                      exact_given_prob(graph_module(student, queue, "probe"), specs["probe"]))


def _reference_gates(student: Student, queue: int, specs: dict[str, GraphSpec],
                     onnx_files: dict[str, Path], ref: _Reference) -> list[GateResult]:
    """ONNX Runtime's step parity, memory dependence, the PyTorch rollout (``ref.probs``),
    ONNX Runtime's rollout and the fp16-compute rollout."""
    frames, masks, inputs, expected = ref.frames, ref.masks, ref.inputs, ref.expected
    init_t = torch_runner(graph_module(student, queue, "init"), specs["init"])
    step_t = torch_runner(graph_module(student, queue, "step"), specs["step"])
    probe_t = torch_runner(graph_module(student, queue, "probe"), specs["probe"])
    gates = [step_parity(specs["probe"], lambda _: expected, {
        "onnx": onnx_runner(onnx_files["probe"], specs["probe"])}, inputs,
        prob_atol=1e-4, state_rtol=1e-4, exact=ref.exact, exact_given_prob=ref.exact_given_prob)]

    # the prediction must depend on memory, or the gates below could not see a memory bug
    blank = dict(inputs, mem_values=np.zeros_like(inputs["mem_values"]))
    moved = float(np.max(np.abs(probe_t(blank)["prob"] - expected["prob"])))
    dep = GateResult("memory_dependence", moved > 1e-2, {"max_prob_change": moved})
    if not dep.passed:
        dep.offending.append(f"zeroing mem_values moved prob by only {moved:.3g} (need > 0.01)")
    gates.append(dep)

    ref.set_probs(*rollout_states(init_t, step_t, specs["step"], frames, masks[0]))
    probs = rollout(onnx_runner(onnx_files["init"], specs["init"]),
                    onnx_runner(onnx_files["step"], specs["step"]), specs["step"], frames,
                    masks[0])
    gates.append(rollout_gate("rollout_onnx", ref.probs, probs, 0.999, 1e-3))
    gates.append(_fp16_compute_gate(student, queue, specs, ref))
    if ref.objects is not None:
        run = {g: onnx_runner(onnx_files[g], specs[g]) for g in ref.objects.inputs}
        gates.append(_objects_parity(ref.objects, specs, {"onnx": run}))
        gates.append(_objects_dependence(student, queue, specs, ref.objects))
        gates.append(_objects_rollout_gates("rollout_objects_onnx", ref.objects, queue, run,
                                            False))
    return gates


def _fp16_compute_gate(student: Student, queue: int, specs: dict[str, GraphSpec],
                       ref: _Reference) -> GateResult:
    """Every activation in fp16 (fp16_compute.py) against fp32 (``parity.fp16_gate``); with
    the read-out's own fp16 error on the realistic step and the largest memory-key norm,
    which sets the size of the read-out's logits."""
    half = half_runners(student, queue, specs)
    gate = _fp16_rollouts("rollout_fp16_compute", half["init"], half["step"], specs, ref)
    got = half["probe"](ref.inputs)
    readout, expected = got["readout"], ref.expected["readout"]
    gate.figures["step_readout_err"] = float(np.max(np.abs(readout - expected)
                                                    / (1.0 + np.abs(expected))))
    gate.figures["step_prob_err"] = float(np.max(np.abs(got["prob"] - ref.expected["prob"])))
    gate.figures["max_key_norm"] = float(np.sqrt((ref.inputs["mem_keys"] ** 2).sum(1)).max())
    if not np.isfinite(readout).all():
        gate.passed = False
        gate.offending.append("the fp16 read-out is not finite on the realistic step")
    return gate


def _tflite_gates(ref: _Reference, specs: dict[str, GraphSpec], tfl: dict[str, Path],
                  parity: GateResult, queue: int,
                  objects_parity: GateResult | None) -> list[GateResult]:
    """Adds TFLite fp32 to the step-parity gate; rollouts of TFLite fp32 and fp16."""
    more = step_parity(specs["probe"], lambda _: ref.expected, {
        "tflite32": tflite_runner(tfl["probe_fp32"], specs["probe"])}, ref.inputs,
        prob_atol=1e-4, state_rtol=1e-4, exact=ref.exact, exact_given_prob=ref.exact_given_prob)
    parity.passed = parity.passed and more.passed
    parity.figures.update(more.figures)
    parity.offending += more.offending
    init, step = (tflite_runner(tfl[f"{g}_fp32"], specs[g]) for g in ("init", "step"))
    probs = rollout(init, step, specs["step"], ref.frames, ref.masks[0])
    gates = [rollout_gate("rollout_tflite_fp32", ref.probs, probs, 0.999, 1e-3)]
    init, step = (tflite_runner(tfl[f"{g}_fp16"], specs[g]) for g in ("init", "step"))
    gates.append(_fp16_rollouts("rollout_tflite_fp16", init, step, specs, ref))
    objects = ref.objects
    if objects is not None and objects_parity is not None:
        run32 = {g: tflite_runner(tfl[f"{g}_fp32"], specs[g]) for g in objects.inputs}
        more = _objects_parity(objects, specs, {"tflite32": run32})
        objects_parity.passed = objects_parity.passed and more.passed
        objects_parity.figures.update(more.figures)
        objects_parity.offending += more.offending
        gates.append(_objects_rollout_gates("rollout_objects_tflite_fp32", objects, queue,
                                            run32, False))
        run16 = {g: tflite_runner(tfl[f"{g}_fp16"], specs[g]) for g in objects.inputs}
        gates.append(_objects_rollout_gates("rollout_objects_tflite_fp16", objects, queue,
                                            run16, True))
    return gates


def _fp16_rollouts(name: str, init: Runner, step: Runner, specs: dict[str, GraphSpec],
                   ref: _Reference) -> GateResult:
    """An fp16 runtime's looped steps and closed loop, judged by ``parity.fp16_gate``."""
    looped = looped_steps(init, step, specs["step"], ref.frames, ref.masks[0], ref.states)
    closed = rollout(init, step, specs["step"], ref.frames, ref.masks[0])
    return fp16_gate(name, ref.probs, looped, closed, ref.masks[1:])


def _gpu_gate(files: list[Path], allow_cpu_fallback: bool,
              warnings: list[str]) -> tuple[dict[str, GpuReport] | None, dict]:
    try:
        reports = check_gpu(files)
    except UserError as exc:
        if not allow_cpu_fallback:
            raise
        warnings.append(f"GPU-delegate check not run: {exc}")
        return None, {"verdict": "not checked", "reason": str(exc)}
    bad = {name: r for name, r in reports.items() if not r.compatible}
    verdict = "compatible" if not bad else "incompatible"
    if bad:
        rows = "\n".join(f"  gpu_delegate  {name:<18} op #{f.index} {f.op}: {f.message}"
                         for name, r in bad.items() for f in r.flagged)
        if not allow_cpu_fallback:
            raise GateError(f"TFLite ops the GPU delegate does not support (they would run on "
                            f"the CPU); nothing was written:\n{rows}\nPass "
                            f"--allow-cpu-fallback to export anyway.")
        warnings.append(f"WARNING: these ops will fall back to the CPU on the phone:\n{rows}")
        verdict = "incompatible (exported with --allow-cpu-fallback)"
    return reports, {"verdict": verdict, "checker": "tf.lite.experimental.Analyzer "
                     "(TensorFlow 2.17), fp16-weight DEQUANTIZE pattern recognised",
                     "files": {n: r.to_dict() for n, r in reports.items()}}


def export_model(
    student: Student, variant: str, queue: int, height: int, width: int, folder: Path, *,
    trained: bool, checkpoint: Path | None = None, precisions: Sequence[str] = PRECISIONS,
    allow_cpu_fallback: bool = False, model_name: str | None = None,
    checkpoint_sha256: str | None = None, objects: bool = True,
) -> ExportResult:
    """Export, gate and write ``folder`` (replaced whole, or left untouched on failure).
    ``objects``: ship the K-object graphs (loop.py) beside init and step.

    ``checkpoint_sha256``: the hash of the bytes ``student`` was loaded from (ChosenStudent
    has it); without it the file is hashed now."""
    if checkpoint is not None:
        checkpoint = Path(checkpoint).resolve()  # the manifest's path works from anywhere
        checkpoint_sha256 = checkpoint_sha256 or sha256(checkpoint)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    warnings: list[str] = []
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise UserError(f"unknown precision {unknown or precisions}; choose from fp32, fp16")
    specs = graph_specs(student, queue, height, width)
    check_memory(student.config, queue, height, width, "an export")  # before building
    folder = Path(folder)
    _check_replaceable(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(f".staging-{folder.name}-", folder.parent)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror} "
                        f"({exc.filename}). Choose another --out.") from None
    try:
        work = staging / ".work"
        work.mkdir()
        shipped = shipped_graphs(queue, objects)
        onnx_files = {name: (staging if name in shipped else work) / f"{name}.onnx"
                      for name in (*shipped, "probe")}
        for name, path in onnx_files.items():
            export_onnx(graph_module(student, queue, name), specs[name], path)
        seconds["onnx"] = time.perf_counter() - start
        conversion = Conversion({n: (p, specs[n]) for n, p in onnx_files.items()}, work,
                                fp32_only=frozenset({"probe"}))
        # The GPU gate (its worker is a process of its own, mostly single-threaded) and the
        # analyzer start as soon as the conversion is done, beside the PyTorch and ONNX
        # Runtime gates; they run the converted files, which are copied to be shipped.
        ref = None
        converted: Future = Future()
        with ThreadPoolExecutor(2) as pool:
            try:
                ref = _reference_inputs(student, queue, specs, height, width, objects)
                on_gpu = pool.submit(_when_converted, conversion, converted, lambda tfl:
                                     gpu_run_gate(_files(tfl, precisions, shipped), specs,
                                                  ref.for_gpu(), allow_cpu_fallback,
                                                  warnings, work))
                analyzer = pool.submit(lambda: _gpu_gate(
                    _files(converted.result(), precisions, shipped), allow_cpu_fallback, warnings))
                gates = _reference_gates(student, queue, specs, onnx_files, ref)
                seconds["torch_onnx_gates"] = time.perf_counter() - start - sum(
                    seconds.values())
                tfl = converted.result()
                seconds["convert_wait"] = time.perf_counter() - start - sum(seconds.values())
                for path in _files(tfl, precisions, shipped):
                    shutil.copyfile(path, staging / path.name)
                    check_io(staging / path.name, specs[path.stem.split("_")[0]])
                gates += _tflite_gates(ref, specs, tfl, gates[0], queue, next(
                    (g for g in gates if g.name == "objects_parity"), None))
                seconds["tflite_gates"] = time.perf_counter() - start - sum(seconds.values())
                gpu, gpu_entry = analyzer.result()
                gpu_gates, gpu_run_entry = on_gpu.result()
                seconds["gpu_wait"] = time.perf_counter() - start - sum(seconds.values())
            finally:
                conversion.cancel()  # an export failing early stops the converter ...
                if ref is not None:
                    ref.ready.set()  # ... and nothing waits for a rollout that never comes
        gates += gpu_gates
        failed = [g for g in gates if not g.passed]
        if failed:
            rows = "\n".join(f"  {g.name:<20} {row}" for g in failed for row in g.offending)
            raise GateError(f"export of {variant} queue {queue} at {height}x{width} failed "
                            f"{len(failed)} gate(s); nothing was written:\n{rows}")
        shutil.rmtree(work)
        verify_written(staging, specs)
        manifest = {
            "schema": SCHEMA,
            "graph_revision": GRAPH_REVISION,
            "variant": variant,
            "queue": queue,
            "size": [height, width],
            "precisions": list(precisions),
            "trained": trained,
            "checkpoint": None if checkpoint is None else
                {"path": str(checkpoint), "sha256": checkpoint_sha256, "name": model_name},
            "config": student.config.to_dict(),
            "graphs": {n: io_spec(specs[n]) for n in shipped},
            "feeds": feeds(specs["step"]),
            "files": file_table(staging),
            "tools": tool_versions(),
            "gates": {g.name: {"passed": g.passed, **g.figures} for g in gates},
            "gpu_check": gpu_entry,
            "gpu_run": gpu_run_entry,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        (staging / MANIFEST).write_text(text)
        manifest = json.loads(text)  # what the file holds (tuples become lists)
        _swap_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds["total"] = time.perf_counter() - start
    return ExportResult(folder, manifest, gates, gpu, warnings, seconds)


def _files(tfl: dict[str, Path], precisions: Sequence[str],
           shipped: Sequence[str]) -> list[Path]:
    """The converted files that ship: every shipped graph in each precision."""
    return [tfl[f"{name}_{precision}"] for name in shipped for precision in precisions]


def _when_converted(conversion: Conversion, converted: Future, then):
    """Waits for the conversion (only here), hands its files to ``converted``, runs
    ``then`` on them."""
    try:
        tfl = conversion.result()
    except BaseException as exc:
        converted.set_exception(exc)
        raise
    converted.set_result(tfl)
    return then(tfl)


def _check_replaceable(folder: Path) -> None:
    """Only an empty folder, or an export of ours holding nothing its manifest does not
    list, may be replaced: anything else may be a user's files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder} exists and is a file, not an export folder; refusing to "
                        "replace it. Choose another --out.")
    try:
        foreign = foreign_entries(folder)
    except OSError as exc:
        raise UserError(f"cannot read {folder} ({exc.strerror}); choose another --out") from None
    if foreign:
        ours = (folder / MANIFEST).is_file() and MANIFEST not in foreign
        what = (f"{len(foreign)} entries its {MANIFEST} does not list" if ours
                else f"no valid {MANIFEST} of ours")
        raise UserError(f"{folder} exists and is not an export folder ({what}: "
                        f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
                        "refusing to replace it. Choose another --out, or move those "
                        "files away.")


def _swap_into_place(staging: Path, final: Path) -> None:
    old = None
    if final.exists():
        _check_replaceable(final)
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
