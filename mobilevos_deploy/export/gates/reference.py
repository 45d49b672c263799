"""What every gate compares against, built once per export.

``Reference`` holds the student, the queue, the size, the graphs' specs and the PyTorch
runners (fp32, and float64 for the step's exact reference), the gate clip and a realistic
step on it, and, with the K-object graphs, the two-object clip with PyTorch's loop on it.
The PyTorch rollout of the gate clip comes last (``rollout``); the GPU gate, which starts
earlier in a thread of its own, waits for it only where it needs it (``wait_probs``).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ...data.synthetic import scene_clip
from ...errors import UserError
from ...model.graphs import NEXT, GraphSpec, graph_module, graph_specs, multi_graphs
from ...model.student import Student
from ...runtime.loop import rollout_objects
from ...runtime.runners import GivenProbRunner, Runner, exact_given_prob, exact_runner, torch_runner
from .gpu import GpuInputs
from .parity import State, nchw_clip, rollout_states

ROLLOUT_FRAMES = 31  # the gate clip: a moving object with an occluder (seed 1)
OBJECT_FRAMES = 12  # the two-object rollout (each frame runs 5 graphs)
OBJECTS_SEED = 4  # mvos-synth --kind scene: objects that touch and occlude each other
REALISTIC_FRAME = 4  # the step the parity gates run: memory filled by the frames before it


class _Runners(dict):
    """graph → runner, each made by ``make`` on first use."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, graph: str) -> Runner:
        self[graph] = self.make(graph)
        return self[graph]


@dataclass
class ObjectsReference:
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


@dataclass
class Reference:
    student: Student
    queue: int
    height: int
    width: int
    with_objects: bool
    specs: dict[str, GraphSpec] = field(init=False)
    frames: np.ndarray = field(init=False)  # the gate clip, T x 3 x H x W
    masks: np.ndarray = field(init=False)  # its truth, T x H x W
    init_inputs: dict[str, np.ndarray] = field(init=False)  # its first frame and mask
    init_expected: dict[str, np.ndarray] = field(init=False)  # PyTorch's init on them
    inputs: dict[str, np.ndarray] = field(init=False)  # the realistic step's inputs
    expected: dict[str, np.ndarray] = field(init=False)  # PyTorch's probe outputs on them
    exact: dict[str, np.ndarray] = field(init=False)  # the probe in float64 on them
    objects: ObjectsReference | None = field(init=False, default=None)
    probs: np.ndarray | None = field(init=False, default=None)  # PyTorch's closed loop
    states: list[State] | None = field(init=False, default=None)  # what each step read
    ready: threading.Event = field(init=False, default_factory=threading.Event)
    _rolling: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        """The gate clip, the init on its first frame, and the realistic step: memory
        filled by the frames before it, with PyTorch's probe outputs on it."""
        self.specs = graph_specs(self.student, self.queue, self.height, self.width)
        self.frames, self.masks = nchw_clip(ROLLOUT_FRAMES, self.height, self.width, seed=1)
        state_names = self.specs["step"].input_names[1:]
        self.init_inputs = {"frame": self.frames[:1], "mask": self.masks[:1, None]}
        out = self.init_expected = self.pytorch["init"](self.init_inputs)
        state = {n: out[n] for n in state_names}
        for t in range(1, REALISTIC_FRAME):
            out = self.pytorch["step"]({"frame": self.frames[t : t + 1], **state})
            state = {n: out[NEXT + n] for n in state_names}
        self.inputs = {"frame": self.frames[REALISTIC_FRAME : REALISTIC_FRAME + 1], **state}
        self.expected = self.pytorch["probe"](self.inputs)
        self.exact = self.exact_runner("probe")(self.inputs)
        if self.with_objects:
            self.objects = self._objects_reference()

    # -- the runners, each built once ---------------------------------------------------

    @cached_property
    def pytorch(self) -> _Runners:
        """PyTorch fp32 on each graph, built when first asked for (channels-last copies:
        runners.torch_runner)."""
        return _Runners(lambda g: torch_runner(graph_module(self.student, self.queue, g),
                                               self.specs[g]))

    @cached_property
    def _float64(self) -> Student:
        return copy.deepcopy(self.student).double()

    def exact_runner(self, graph: str) -> Runner:
        """PyTorch in float64 on one copy of the student, shared by every graph."""
        return exact_runner(graph_module(self._float64, self.queue, graph), self.specs[graph],
                            own_copy=False)

    @cached_property
    def exact_given_prob(self) -> GivenProbRunner:
        """The probe in float64, its memory write encoding a given probability."""
        return exact_given_prob(graph_module(self.student, self.queue, "probe"),
                                self.specs["probe"])

    # -- the PyTorch rollout, which the GPU gate may wait for -----------------------------

    def rollout(self) -> tuple[np.ndarray, list[State]]:
        """PyTorch's closed loop over the gate clip, and the state each step read; run once,
        by the first caller (the CPU gates; the GPU gate's thread waits: ``wait_probs``)."""
        with self._rolling:
            if self.probs is None or self.states is None:
                self.probs, self.states = rollout_states(
                    self.pytorch["init"], self.pytorch["step"], self.specs["step"],
                    self.frames, self.masks[0])
            self.ready.set()
        return self.probs, self.states

    def wait_probs(self) -> tuple[np.ndarray, list[State]]:
        self.ready.wait()
        if self.probs is None or self.states is None:
            raise UserError("the PyTorch reference rollout did not complete")
        return self.probs, self.states

    def release(self) -> None:
        """Nothing may wait for a rollout that will never come (an export failing early)."""
        self.ready.set()

    def for_gpu(self) -> GpuInputs:
        objects = self.objects
        return GpuInputs(self.init_inputs, self.init_expected, self.inputs, self.expected,
                         self.frames, self.masks[0], self.masks[1:], self.wait_probs,
                         {} if objects is None else {
                             g: (objects.inputs[g], objects.expected[g]) for g in objects.inputs},
                         None if objects is None else (objects.frames, objects.masks0,
                                                       objects.probs, objects.queue,
                                                       objects.states))

    def _objects_reference(self) -> ObjectsReference:
        """The two-object clip, PyTorch's loop on it, and one realistic input per graph:
        frame REALISTIC_FRAME of that loop (its memory filled by the loop itself)."""
        clip = scene_clip(OBJECT_FRAMES, self.height, self.width, seed=OBJECTS_SEED)
        labels = clip.ids().numpy()
        frames = clip.frames.numpy()
        masks = np.stack([(labels == k).astype(np.float32) for k in (1, 2)], axis=1)  # T x K
        graphs = multi_graphs(self.queue)
        run = {g: self.pytorch[g] for g in graphs}
        probs, read = rollout_objects(run, self.queue, frames, masks[0])
        t = REALISTIC_FRAME
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
        exact = {g: self.exact_runner(g)(inputs[g]) for g in graphs}
        return ObjectsReference(frames, masks[0], masks[1:].transpose(1, 0, 2, 3), probs,
                                read, inputs, expected, exact, self.queue)
