"""What is explained: the score each model output contributes, and the class of each sample.

A target spec, given per output, is one of:

- ``None``: the predicted class of each sample (argmax of the output);
- an int: that class for every sample;
- a 1-D array-like of ints, one class id per sample (true labels, for instance); a length that
  differs from the batch size is an error, never a silent zero map;
- a 2-D array (batch, classes) of one-hot labels: their argmax;
- a callable ``score(output) -> (batch,)`` computing the score from the output tensor (logits by
  default), for regression, segmentation or any other target.

For an output with more than two axes (a segmentation map (batch, h, w, classes), say), the
score of class c is the mean of ``output[..., c]`` over the middle axes, as in tf-keras-vis.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.graph import FlatGraph

__all__ = [
    "Scorer",
    "Target",
    "class_ids",
    "group_scores",
    "make_scorer",
    "predicted_classes",
    "resolve_target",
    "split_targets",
]

_SQUASHERS = ("softmax", "sigmoid", "log_softmax")


# ------------------------------------------------------------------------------------------
# Scores: which tensor is scored (logits by default, read without touching the user's layers)
# ------------------------------------------------------------------------------------------


def _activation_name(function) -> str:
    return getattr(function, "__name__", type(function).__name__).lower()


def _linear_view(layer) -> Callable[[tf.Tensor], tf.Tensor]:
    """The pre-activation of a layer with a built-in softmax/sigmoid, from its input.

    It reads the layer's live variables (no copy, no activation swap), so it stays right when the
    model keeps training.
    """
    if getattr(layer, "quantization_mode", None):
        return None
    if isinstance(layer, keras.layers.Dense):

        def dense(x):
            y = keras.ops.matmul(keras.ops.cast(x, layer.kernel.dtype), layer.kernel)
            return y if layer.bias is None else y + layer.bias

        return dense
    if isinstance(layer, keras.layers.EinsumDense):

        def einsum_dense(x):
            x = keras.ops.cast(x, layer.kernel.dtype)
            y = keras.ops.einsum(layer.equation, x, layer.kernel)
            return y if layer.bias is None else y + layer.bias

        return einsum_dense
    conv_types = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    if isinstance(layer, conv_types) and layer.data_format == "channels_last":

        def conv(x):
            y = layer.convolution_op(keras.ops.cast(x, layer.kernel.dtype), layer.kernel)
            return y if not layer.use_bias else y + layer.bias

        return conv
    return None


@dataclasses.dataclass(frozen=True)
class Scorer:
    """How the scored tensor of one model output is read from the flat graph.

    Attributes:
        name: the output's name.
        tensor: the flat tensor fetched.
        transform: maps the fetched tensor to the scored one (float32).
        num_classes: size of the last axis of the scored tensor.
        activation: the output's own final activation ("softmax", "sigmoid", "log_softmax" or
            "linear" for anything else).
    """

    name: str
    tensor: int
    transform: Callable[[tf.Tensor], tf.Tensor]
    num_classes: int
    activation: str


def _float32(x):
    return tf.cast(x, tf.float32)


def make_scorer(graph: FlatGraph, position: int, score_on: str) -> Scorer:
    """Finds how to read output `position` as logits or probabilities.

    Logits: if the output comes out of a `Softmax` layer, an `Activation` layer or a Keras op
    applying softmax/sigmoid/log_softmax, its input; if it comes out of a `Dense`,
    `EinsumDense` or `ConvND` layer with such a built-in activation, that layer's pre-activation
    computed from its input and its own variables; otherwise the output itself. Probabilities:
    the output itself when it ends with softmax or sigmoid, else softmax of the logits (sigmoid
    when there is a single unit).

    Raises:
        ValueError: if the logits are hidden inside another kind of layer.
    """
    output = graph.outputs[position]
    name = graph.output_names[position]
    num_classes = graph.tensors[output].shape[-1]
    step = graph.producer(output)
    operation = None if step is None else step.operation
    activation = "linear"
    logits_tensor, logits_fn = output, _float32
    own = getattr(operation, "activation", None)
    is_activation_layer = isinstance(operation, keras.layers.Activation | keras.layers.Softmax)
    if isinstance(operation, keras.layers.Softmax):
        activation = "softmax"
    elif own is not None and _activation_name(own) in _SQUASHERS:
        activation = _activation_name(own)
    elif operation is not None and type(operation).__name__.lower() in ("softmax", "sigmoid"):
        activation = type(operation).__name__.lower()  # keras.ops.softmax / sigmoid in a graph
        is_activation_layer = True
    if activation != "linear" and len(step.inputs) == 1:
        if is_activation_layer:
            logits_tensor = step.inputs[0]
        else:
            view = _linear_view(operation)
            if view is None and score_on == "logits":
                raise ValueError(
                    f"Cannot read the logits of output {name!r}: its layer {step.name!r} "
                    f"({type(operation).__name__}) applies {activation} inside. End the model "
                    f"with a separate `Activation('{activation}')` layer, or pass "
                    f"score_on='probabilities'."
                )
            if view is not None:
                logits_tensor = step.inputs[0]
                logits_fn = lambda x, view=view: _float32(view(x))  # noqa: E731
    if score_on == "logits":
        return Scorer(name, logits_tensor, logits_fn, num_classes, activation)
    if activation in ("softmax", "sigmoid"):
        return Scorer(name, output, _float32, num_classes, activation)
    squash = tf.nn.sigmoid if num_classes == 1 else tf.nn.softmax
    return Scorer(name, logits_tensor, lambda x: squash(logits_fn(x)), num_classes, activation)


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------


def _class_axis_mean(output: tf.Tensor) -> tf.Tensor:
    """(batch, ..., classes) -> (batch, classes): mean over the middle axes."""
    if output.shape.rank is not None and output.shape.rank > 2:
        return tf.reduce_mean(output, axis=list(range(1, output.shape.rank - 1)))
    return output


@dataclasses.dataclass(frozen=True)
class Target:
    """The resolved target of one output for one batch.

    Attributes:
        class_ids: int array (batch,) (an int64 tensor inside a compiled pass), or None when
            `function` scores the output.
        function: a callable ``score(output) -> (batch,)``, or None.
    """

    class_ids: np.ndarray | None
    function: Callable | None = None

    def scores(self, output: tf.Tensor) -> tf.Tensor:
        """Scores (batch,) of a scored tensor whose rows are the batch's samples, in order."""
        batch = output.shape[0]
        if self.function is None:
            per_class = _class_axis_mean(output)
            # (row, class) pairs with gather_nd: the same values as gather(batch_dims=1), and a
            # gradient (one scatter) that traces into a handful of ops, where the batched
            # gather's gradient builds many more when the batch size is unknown (a compiled pass).
            rows = tf.range(tf.shape(per_class, out_type=tf.int64)[0])
            ids = tf.cast(self.class_ids, tf.int64)
            return tf.gather_nd(per_class, tf.stack([rows, ids], axis=1))
        value = tf.convert_to_tensor(self.function(output))
        if value.shape.rank is None or value.shape.rank < 1 or value.shape[0] != batch:
            raise ValueError(
                f"A target callable must return one score per sample, shape ({batch},). "
                f"Received: shape {tuple(value.shape)}"
            )
        value = tf.cast(value, tf.float32)
        if value.shape.rank > 1:
            value = tf.reduce_mean(value, axis=list(range(1, value.shape.rank)))
        return value


def _ids_error(name: str, message: str, spec) -> ValueError:
    shown = spec if np.size(spec) <= 12 else f"array of shape {np.shape(spec)}"
    return ValueError(f"Targets for output {name!r}: {message} Received: targets={shown!r}")


def resolve_target(spec, scored: tf.Tensor, name: str) -> Target:
    """Turns a target spec into class ids (or a callable) for the batch scored by `scored`.

    Args:
        spec: None, an int, class ids, one-hot labels or a callable (see the module docstring).
        scored: the scored tensor (batch, ..., classes) of the clean images; gives the predicted
            classes, the batch size and the number of classes.
        name: the output name, for error messages.

    Raises:
        ValueError: for ids of the wrong length, type or range.
    """
    batch, num_classes = scored.shape[0], scored.shape[-1]
    if spec is None:
        return Target(predicted_classes(scored).numpy())
    if callable(spec):
        return Target(None, spec)
    return Target(class_ids(spec, batch, num_classes, name))


def predicted_classes(scored: tf.Tensor) -> tf.Tensor:
    """The predicted class of each sample, (batch,) int64: the argmax of the class scores."""
    return tf.argmax(_class_axis_mean(scored), axis=-1, output_type=tf.int64)


def class_ids(spec, batch: int, num_classes: int, name: str) -> np.ndarray:
    """Checks an explicit class spec (an int, class ids or one-hot labels) against the batch
    size and the number of classes; returns the class ids, int64 (batch,).

    Needs no forward pass, so the ids can be checked before a compiled pass runs.

    Raises:
        ValueError: for ids of the wrong length, type or range.
    """
    if isinstance(spec, bool | str | bytes):
        raise _ids_error(
            name, "expected None, class id(s), one-hot labels or a callable score(output).", spec
        )
    array = np.asarray(spec.numpy() if isinstance(spec, tf.Tensor) else spec)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or (array.ndim == 2 and array.dtype.kind == "f")
    ):
        raise _ids_error(name, f"class ids must be integers; got dtype {array.dtype}.", spec)
    if array.ndim == 0:
        array = np.full((batch,), int(array))
    elif array.ndim == 2:
        if array.shape != (batch, num_classes):
            raise _ids_error(
                name,
                f"2-D targets are one-hot labels of shape (batch, classes) = "
                f"({batch}, {num_classes}); got shape {array.shape}.",
                spec,
            )
        array = array.argmax(axis=-1)
    elif array.ndim != 1:
        raise _ids_error(name, f"expected a 1-D array of class ids; got shape {array.shape}.", spec)
    if len(array) != batch:
        raise _ids_error(
            name,
            f"got {len(array)} class ids for a batch of {batch} images; pass one id per image "
            f"(or a single int for all).",
            spec,
        )
    bad = (array < 0) | (array >= num_classes)
    if bad.any():
        raise _ids_error(
            name,
            f"class ids must be in [0, {num_classes - 1}] (the output has {num_classes} "
            f"classes); got {sorted(set(array[bad].tolist()))[:5]}.",
            spec,
        )
    return array.astype(np.int64)


def split_targets(targets, num_outputs: int) -> list:
    """One target spec per explained output.

    A list or tuple is per output when the model has several explained outputs (its length must
    then match); with one output, a list of ints is the per-sample class ids. Anything else
    (None, an int, an array, a callable) applies to every output; to give the same per-sample
    ids to several outputs, pass them as a NumPy array.

    Raises:
        ValueError: if a per-output list has the wrong length.
    """
    if isinstance(targets, list | tuple):
        if num_outputs == 1:
            if len(targets) == 1 and not isinstance(targets[0], numbers.Integral):
                return list(targets)
            return [targets]
        if len(targets) != num_outputs:
            raise ValueError(
                f"A list of targets gives one target per explained output, and there are "
                f"{num_outputs}; received a list of length {len(targets)}. To use the same "
                f"per-sample class ids for every output, pass them as a NumPy array. Received: "
                f"targets={targets!r}"
            )
        return list(targets)
    return [targets] * num_outputs


def group_scores(target: Target, scored: tf.Tensor, batch: int) -> tf.Tensor:
    """Scores of `groups x batch` rows, ordered group-major: (groups, batch).

    Each group is a perturbed copy of the batch (Score-CAM masks, SmoothGrad noise), so a
    callable target sees batches exactly like the clean one.
    """
    groups = scored.shape[0] // batch
    rows = tf.reshape(scored, (groups, batch, *scored.shape[1:]))
    return tf.stack([target.scores(rows[g]) for g in range(groups)])
