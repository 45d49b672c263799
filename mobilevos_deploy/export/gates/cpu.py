"""The gates on the CPU runtimes (ONNX Runtime, LiteRT's interpreter, PyTorch's fp16
simulation): one function per gate, each returning its ``GateResult``. What each compares,
its limits and why: docs/GATES.md.

  step_parity          one realistic step (the probe graph) against float64, stage by stage
  memory_dependence    zeroing the memory moves the mask by far more than the tolerances
  fp32_rollout         a runtime's closed loop against PyTorch's, pixel by pixel
  fp16_rollout         an fp16 runtime's looped steps and closed loop (parity.fp16_gate)
  fp16_compute         the student with every activation in fp16 (fp16_compute.py)
  objects_parity       each K-object graph on one realistic input, at the step limits
  objects_dependence   zeroing the memory moves segment's mask
  objects_rollout      a runtime's two-object loop against PyTorch's
"""

from __future__ import annotations

import numpy as np

from ...model.graphs import NEXT
from ...runtime.loop import Encoded, looped_objects, rollout_objects
from ...runtime.runners import Runner
from .fp16_compute import half_runners
from .parity import (
    GateResult,
    fp16_gate,
    looped_steps,
    objects_fp32_gate,
    rollout,
    rollout_gate,
)
from .parity import (
    step_parity as judge_step,
)
from .reference import Reference

STEP_PROB_ATOL = 1e-4  # prob, max abs
STEP_STATE_RTOL = 1e-4  # every other output, max abs / (1 + |x|)
FP32_MIN_IOU = 0.999  # where the reference is sure
FP32_MAX_PROB_ERR = 1e-3
MIN_DEPENDENCE = 1e-2  # how far zeroing the memory must move the mask


def merge(into: GateResult, more: GateResult) -> GateResult:
    """One gate's figures from another run of it (another runtime) added to ``into``."""
    into.passed = into.passed and more.passed
    into.figures.update(more.figures)
    into.offending += more.offending
    return into


def step_parity(ref: Reference, runtimes: dict[str, Runner]) -> GateResult:
    """Each runtime's probe on the realistic step against the float64 step, stage by
    stage (parity.step_parity)."""
    return judge_step(ref.specs["probe"], lambda _: ref.expected, runtimes, ref.inputs,
                      prob_atol=STEP_PROB_ATOL, state_rtol=STEP_STATE_RTOL, exact=ref.exact,
                      exact_given_prob=ref.exact_given_prob)


def memory_dependence(ref: Reference) -> GateResult:
    """The prediction must depend on memory, or the gates could not see a memory bug."""
    blank = dict(ref.inputs, mem_values=np.zeros_like(ref.inputs["mem_values"]))
    moved = float(np.max(np.abs(ref.pytorch["probe"](blank)["prob"] - ref.expected["prob"])))
    gate = GateResult("memory_dependence", moved > MIN_DEPENDENCE, {"max_prob_change": moved})
    if not gate.passed:
        gate.offending.append(f"zeroing mem_values moved prob by only {moved:.3g} "
                              f"(need > {MIN_DEPENDENCE})")
    return gate


def fp32_rollout(name: str, ref: Reference, init: Runner, step: Runner) -> GateResult:
    """An fp32 runtime's closed loop over the gate clip against PyTorch's, pixel by pixel."""
    probs = rollout(init, step, ref.specs["step"], ref.frames, ref.masks[0])
    return rollout_gate(name, ref.rollout()[0], probs, FP32_MIN_IOU, FP32_MAX_PROB_ERR)


def fp16_rollout(name: str, ref: Reference, init: Runner, step: Runner) -> GateResult:
    """An fp16 runtime's looped steps and closed loop, judged by ``parity.fp16_gate``."""
    probs, states = ref.rollout()
    looped = looped_steps(init, step, ref.specs["step"], ref.frames, ref.masks[0], states)
    closed = rollout(init, step, ref.specs["step"], ref.frames, ref.masks[0])
    return fp16_gate(name, probs, looped, closed, ref.masks[1:])


def fp16_compute(ref: Reference) -> GateResult:
    """Every activation in fp16 (fp16_compute.py) against fp32 (``parity.fp16_gate``); with
    the read-out's own fp16 error on the realistic step and the largest memory-key norm,
    which sets the size of the read-out's logits."""
    half = half_runners(ref.student, ref.queue, ref.specs)
    gate = fp16_rollout("rollout_fp16_compute", ref, half["init"], half["step"])
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


def objects_parity(ref: Reference, runtimes: dict[str, dict[str, Runner]]) -> GateResult:
    """``runtimes``: runtime → graph → runner; every K-object graph's outputs against
    float64 on its realistic input, at the step-parity limits."""
    objects = ref.objects
    assert objects is not None
    gate = GateResult("objects_parity", True)
    for graph in objects.inputs:
        one = judge_step(ref.specs[graph], lambda _, g=graph: objects.expected[g],
                         {rt: run[graph] for rt, run in runtimes.items()},
                         objects.inputs[graph], prob_atol=STEP_PROB_ATOL,
                         state_rtol=STEP_STATE_RTOL, exact=objects.exact[graph])
        gate.passed = gate.passed and one.passed
        gate.figures.update({f"{graph}.{k}": v for k, v in one.figures.items()})
        gate.offending += [f"{graph:<9} {row}" for row in one.offending]
    return gate


def objects_dependence(ref: Reference) -> GateResult:
    """The two-object gates could see a memory bug: zeroing the memory moves segment's mask.

    How far zeroing ``others`` moves memorize's values is reported, not gated: it is the
    network's own choice. A student trained on single objects only never saw the channel
    and Adam's weight decay (a full learning-rate step for a weight with no other gradient)
    drove its weights to ~1e-9, so it ignores it (measured on mvos-synth-noaspp-v2: 9e-7);
    a graph that dropped the channel could then not differ from PyTorch either."""
    objects = ref.objects
    assert objects is not None
    gate = GateResult("objects_dependence", True)
    seg_in = objects.inputs["segment"]
    blank = dict(seg_in, mem_values=np.zeros_like(seg_in["mem_values"]))
    moved = float(np.max(np.abs(ref.pytorch["segment"](blank)["prob"]
                                - objects.expected["segment"]["prob"])))
    gate.figures["segment_max_prob_change"] = moved
    if not moved > MIN_DEPENDENCE:
        gate.passed = False
        gate.offending.append(f"zeroing mem_values moved segment's prob by only {moved:.3g} "
                              f"(need > {MIN_DEPENDENCE})")
    if "memorize" in objects.inputs:
        mem_in = objects.inputs["memorize"]
        alone = ref.pytorch["memorize"](dict(mem_in, others=np.zeros_like(mem_in["others"])))
        key = NEXT + "mem_values"
        changed = float(np.max(np.abs(alone[key] - objects.expected["memorize"][key])
                               / (1.0 + np.abs(objects.expected["memorize"][key]))))
        gate.figures["memorize_max_value_change"] = changed
    return gate


def objects_rollout(name: str, ref: Reference, run: dict[str, Runner],
                    fp16: bool) -> GateResult:
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
    objects = ref.objects
    assert objects is not None
    encoded = Encoded(run, objects.frames)
    closed, _ = rollout_objects(run, ref.queue, objects.frames, objects.masks0, encoded)
    looped = looped_objects(run, ref.queue, objects.frames, objects.masks0, objects.states,
                            (closed, encoded))
    flat = objects.probs.reshape(-1, *objects.probs.shape[2:])
    if fp16:
        return fp16_gate(name, flat, looped.reshape(flat.shape), closed.reshape(flat.shape),
                         objects.truth.reshape(flat.shape))
    return objects_fp32_gate(name, flat, looped.reshape(flat.shape), closed.reshape(flat.shape))
