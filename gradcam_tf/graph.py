"""A flat, replayable view of a Keras 3 functional or Sequential model.

Keras keeps a nested model (a pretrained base used as a layer) as one operation of the outer
graph: its inner activations are not tensors of the outer model, and
``keras.Model(outer.inputs, inner_layer.output)`` fails with "Graph disconnected", the failure CAM
users report most. `FlatGraph` opens nested functional and Sequential models up. It records every
call of a leaf layer (or Keras op) as a `Step` that reads and writes integer tensor ids, so that
any inner activation is addressable by a qualified name such as ``"backbone/conv2"``.

`FlatGraph.run` replays the steps eagerly on concrete tensors. Nothing is built or registered on
the user's layers (no new nodes, no weight copies), only the steps needed for the requested
tensors run, and the replay can add a zero "tap" tensor on chosen edges, which the one-pass
multi-output gradient of `gradcam_tf.base` relies on.

Keras 3 has no public graph API: the walk reads ``Functional._nodes_by_depth``,
``Sequential._functional`` and each node's ``arguments``, ``outputs`` and ``operation``. These
internals are confined to this module.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

__all__ = ["FlatGraph", "Step", "TensorInfo", "Tap"]


@dataclasses.dataclass(frozen=True)
class _Ref:
    """Placeholder for a tensor inside a step's recorded call arguments."""

    tensor: int


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Static facts about one tensor of the flat graph.

    Attributes:
        shape: symbolic shape, batch axis first (``None`` where unknown).
        dtype: dtype name.
        step: index of the step that computes it, or None for a model input.
    """

    shape: tuple
    dtype: str
    step: int | None


@dataclasses.dataclass(frozen=True)
class Step:
    """One call of a leaf layer or op.

    Attributes:
        index: position in execution order.
        operation: the user's layer (or Keras op), called as is.
        name: qualified name, nested model names joined by "/" (Keras 3 forbids "/" in names);
            a layer called several times (shared weights) gets "@1", "@2"... from its second call.
        args: positional call arguments, tensors replaced by `_Ref`.
        kwargs: keyword call arguments, tensors replaced by `_Ref`.
        inputs: ids of the tensors it reads.
        outputs: ids of the tensors it writes.
        takes_training: whether its ``call`` has a ``training`` argument (set to False on replay).
    """

    index: int
    operation: Any
    name: str
    args: tuple
    kwargs: dict
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    takes_training: bool


@dataclasses.dataclass(frozen=True)
class Tap:
    """A zero tensor added to `tensor` on the edges into `consumers` only.

    The gradient with respect to the tap is the gradient that flows back through those edges,
    i.e. the part of d(score)/d(tensor) carried by those consumers.
    """

    tensor: int
    consumers: frozenset[int]


def _is_graph_model(operation) -> bool:
    if isinstance(operation, keras.Sequential):
        return getattr(operation, "_functional", None) is not None
    return isinstance(operation, Functional)


def _takes_training(operation) -> bool:
    call = getattr(operation, "call", None)
    if call is None:
        return False
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


class FlatGraph:
    """The leaf-level graph of a functional or Sequential Keras model.

    Args:
        model: a built functional or Sequential `keras.Model`. Nested functional and Sequential
            models are opened up; other nested layers (subclassed models included) stay opaque.

    Raises:
        ValueError: if the model is subclassed or not built.
    """

    def __init__(self, model: keras.Model):
        if not _is_graph_model(model):
            kind = "an unbuilt Sequential" if isinstance(model, keras.Sequential) else "a"
            raise ValueError(
                "gradcam_tf reads the layer graph, so it needs a functional or built Sequential "
                f"model; received {kind} model of class {type(model).__name__!r}. Wrap it: "
                "`inputs = keras.Input(shape); model = keras.Model(inputs, net(inputs))`, or "
                "give a Sequential model a `keras.Input` first."
            )
        self.steps: list[Step] = []
        self.tensors: dict[int, TensorInfo] = {}
        self.names: dict[str, int] = {}
        self._calls: collections.Counter = collections.Counter()
        functional = self._functional(model)
        self.inputs = [self._new_tensor(x, None) for x in functional.inputs]
        self.outputs = self._open(model, self.inputs, prefix="")
        names = getattr(model, "output_names", None)
        if not names or len(names) != len(self.outputs):
            names = [self._output_name(x) for x in functional.outputs]
        self.output_names = [str(name) for name in names]
        self.consumers: dict[int, list[int]] = collections.defaultdict(list)
        for step in self.steps:
            for tensor in step.inputs:
                self.consumers[tensor].append(step.index)
        self.reach = self._reachable_outputs()
        self._schedules: dict[tuple[int, ...], list[int]] = {}

    # ---------------------------------------------------------------------------------------
    # Building
    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _functional(model):
        return model._functional if isinstance(model, keras.Sequential) else model

    @staticmethod
    def _output_name(tensor) -> str:
        history = getattr(tensor, "_keras_history", None)
        return history.operation.name if history is not None else "output"

    def _new_tensor(self, keras_tensor, step: int | None) -> int:
        tensor_id = len(self.tensors)
        shape = tuple(keras_tensor.shape)
        self.tensors[tensor_id] = TensorInfo(shape, str(keras_tensor.dtype), step)
        return tensor_id

    def _open(self, model, input_ids: Sequence[int], prefix: str) -> list[int]:
        """Records the leaf calls of `model` fed with flat tensors `input_ids`; returns the flat
        ids of its outputs."""
        functional = self._functional(model)
        local = {id(x): i for x, i in zip(functional.inputs, input_ids)}
        nodes_by_depth = functional._nodes_by_depth
        for depth in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[depth]:
                operation = node.operation
                if node.is_input or isinstance(operation, keras.layers.InputLayer):
                    continue
                args, kwargs = node.arguments.args, node.arguments.kwargs
                name = self._next_name(prefix + operation.name)
                if _is_graph_model(operation):
                    fed = args[0] if args else kwargs.get("inputs", next(iter(kwargs.values())))
                    inner_inputs = [local[id(x)] for x in keras.tree.flatten(fed)]
                    inner_outputs = self._open(operation, inner_inputs, prefix=name + "/")
                    for x, i in zip(node.outputs, inner_outputs):
                        local[id(x)] = i
                    if len(inner_outputs) == 1:
                        self.names[name] = inner_outputs[0]
                    continue
                self._record(operation, name, args, kwargs, node.outputs, local)
        return [local[id(x)] for x in functional.outputs]

    def _next_name(self, name: str) -> str:
        """`name` for the first call of a layer, `name@i` for its (i+1)-th call."""
        calls = self._calls[name]
        self._calls[name] += 1
        return name if calls == 0 else f"{name}@{calls}"

    def _record(self, operation, name, args, kwargs, outputs, local) -> None:
        read: list[int] = []

        def to_ref(x):
            if isinstance(x, keras.KerasTensor):
                tensor = local[id(x)]
                if tensor not in read:
                    read.append(tensor)
                return _Ref(tensor)
            return x

        index = len(self.steps)
        ref_args = keras.tree.map_structure(to_ref, args)
        ref_kwargs = keras.tree.map_structure(to_ref, kwargs)
        written = []
        for x in outputs:
            written.append(self._new_tensor(x, index))
            local[id(x)] = written[-1]
        if len(written) == 1:
            self.names[name] = written[0]
        step = Step(
            index=index,
            operation=operation,
            name=name,
            args=tuple(ref_args),
            kwargs=dict(ref_kwargs),
            inputs=tuple(read),
            outputs=tuple(written),
            takes_training=_takes_training(operation),
        )
        self.steps.append(step)

    def _reachable_outputs(self) -> dict[int, frozenset[int]]:
        """For every tensor, the positions of the model outputs it feeds (itself included)."""
        reach: dict[int, set[int]] = collections.defaultdict(set)
        for position, tensor in enumerate(self.outputs):
            reach[tensor].add(position)
        for step in reversed(self.steps):
            downstream = set().union(*(reach[t] for t in step.outputs))
            for tensor in step.inputs:
                reach[tensor] |= downstream
        return {t: frozenset(reach[t]) for t in self.tensors}

    # ---------------------------------------------------------------------------------------
    # Queries
    # ---------------------------------------------------------------------------------------

    def producer(self, tensor: int) -> Step | None:
        """The step that computes `tensor` (None for a model input)."""
        step = self.tensors[tensor].step
        return None if step is None else self.steps[step]

    def tensor_name(self, tensor: int) -> str:
        """The qualified name of the layer that computes `tensor`."""
        step = self.producer(tensor)
        if step is None:
            return "input"
        if len(step.outputs) == 1:
            return step.name
        return f"{step.name}[{step.outputs.index(tensor)}]"

    def ancestors(self, tensors: Sequence[int]) -> set[int]:
        """Indices of the steps needed to compute `tensors`."""
        needed: set[int] = set()
        stack = list(tensors)
        seen = set(stack)
        while stack:
            step = self.producer(stack.pop())
            if step is None or step.index in needed:
                continue
            needed.add(step.index)
            for tensor in step.inputs:
                if tensor not in seen:
                    seen.add(tensor)
                    stack.append(tensor)
        return needed

    # ---------------------------------------------------------------------------------------
    # Replay
    # ---------------------------------------------------------------------------------------

    def run(
        self,
        inputs: Sequence[tf.Tensor],
        fetch: Sequence[int],
        taps: Mapping[Any, Tap] | None = None,
        tape: tf.GradientTape | None = None,
        watch: Sequence[int] = (),
    ) -> tuple[dict[int, tf.Tensor], dict[Any, tf.Tensor]]:
        """Computes the tensors `fetch` for concrete `inputs`, in inference mode.

        Args:
            inputs: one tensor per model input.
            fetch: ids of the tensors wanted.
            taps: zero tensors to add on chosen edges, by key. Each edge (consumer, tensor) may
                carry at most one tap.
            tape: a tape that watches the taps and the `watch` tensors as soon as they exist.
            watch: ids of tensors to watch (gradients with respect to them).

        Returns:
            The fetched tensors by id, and the tap tensors by key.
        """
        taps = dict(taps or {})
        edge_tap = {}
        for key, tap in taps.items():
            for consumer in tap.consumers:
                edge_tap[(consumer, tap.tensor)] = key
        tapped = {tap.tensor for tap in taps.values()}
        values: dict[int, tf.Tensor] = dict(zip(self.inputs, inputs))
        tap_values: dict[Any, tf.Tensor] = {}
        for key, tap in taps.items():
            if tap.tensor in values:  # a tap on a model input
                tap_values[key] = tf.zeros_like(values[tap.tensor])
                if tape is not None:
                    tape.watch(tap_values[key])
        key = tuple(sorted(set(fetch)))
        if key not in self._schedules:
            self._schedules[key] = sorted(self.ancestors(key))
        for index in self._schedules[key]:
            step = self.steps[index]

            def fill(x, step=step):
                if not isinstance(x, _Ref):
                    return x
                key = edge_tap.get((step.index, x.tensor))
                if key is None:
                    return values[x.tensor]
                return values[x.tensor] + tap_values[key]

            args = keras.tree.map_structure(fill, step.args)
            kwargs = keras.tree.map_structure(fill, step.kwargs)
            if step.takes_training and "training" not in kwargs:
                kwargs["training"] = False
            result = step.operation(*args, **kwargs)
            for tensor, value in zip(step.outputs, keras.tree.flatten(result)):
                values[tensor] = value
                if tape is not None and tensor in watch:
                    tape.watch(value)
                if tensor in tapped:
                    for key, tap in taps.items():
                        if tap.tensor == tensor:
                            tap_values[key] = tf.zeros_like(value)
                            if tape is not None:
                                tape.watch(tap_values[key])
        return {t: values[t] for t in fetch}, tap_values
