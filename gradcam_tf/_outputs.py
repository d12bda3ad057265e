"""Private helpers shared by `metrics` and `activation_maximization`: choosing one output of a
(possibly multi-output) Keras model, finding its final activation, and running the model in
fixed-size batches under `tf.function`.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

_SOFTMAX = keras.activations.softmax
_SIGMOID = keras.activations.sigmoid
_LINEAR = (keras.activations.linear, None)


def output_names(model: keras.Model) -> list[str]:
    """The model's output names, in output order (empty if the model does not expose them)."""
    names = getattr(model, "output_names", None)
    if names is None:
        return []
    return [str(name) for name in names]


def resolve_output_index(model: keras.Model, output_index: int | str | None) -> int:
    """Turns `output_index` (position, output name or None) into a position in `model.outputs`.

    None is accepted only for single-output models, so that an explanation of a multi-exit
    network never silently picks an exit.
    """
    outputs = getattr(model, "outputs", None)
    names = output_names(model)
    count = len(outputs) if outputs is not None else max(len(names), 1)
    if output_index is None:
        if count != 1:
            raise ValueError(
                f"The model has {count} outputs {names}; pass `output_index` (a position or one "
                f"of the output names) to choose one. Received: output_index=None"
            )
        return 0
    if isinstance(output_index, str):
        if output_index not in names:
            raise ValueError(
                f"Unknown output name; expected one of {names}. Received: "
                f"output_index={output_index!r}"
            )
        return names.index(output_index)
    if isinstance(output_index, bool) or not isinstance(output_index, int | np.integer):
        raise ValueError(
            f"`output_index` must be an int, an output name or None. Received: "
            f"output_index={output_index!r}"
        )
    if not -count <= int(output_index) < count:
        raise ValueError(
            f"`output_index` is out of range for a model with {count} output(s). Received: "
            f"output_index={output_index}"
        )
    return int(output_index) % count


def single_output_model(model: keras.Model, index: int) -> keras.Model:
    """A model with the same input(s) and only output `index`, sharing the user's layers.

    Falls back to the model itself when it is not a graph model (subclassed) and has one output.
    """
    outputs = getattr(model, "outputs", None)
    if outputs is None:
        return model
    if len(outputs) == 1:
        return model
    return keras.Model(model.inputs, outputs[index])


def _producer(tensor):
    """The layer that produced a symbolic tensor and the tensors it was called on."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, []
    layer = history.operation
    node = layer._inbound_nodes[history.node_index]
    return layer, list(node.input_tensors)


def output_activation(model: keras.Model, index: int) -> str | None:
    """The final activation of output `index`: "softmax", "sigmoid", "linear" or None (unknown).

    Reads the graph: a `Softmax` layer, an `Activation` layer, or the `activation` of the layer
    (Dense, Conv...) that produced the output; nested models are followed to their own output.
    """
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    layer, _ = _producer(outputs[index])
    while isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
        if len(layer.outputs) != 1:
            return None
        layer, _ = _producer(layer.outputs[0])
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", "missing")
    if activation is _SOFTMAX:
        return "softmax"
    if activation is _SIGMOID:
        return "sigmoid"
    if activation in _LINEAR:
        return "linear"
    return None


def logit_model(model: keras.Model, index: int) -> keras.Model:
    """A single-output model giving the pre-softmax/-sigmoid scores of output `index`.

    If the output comes out of a `Softmax` or `Activation` layer, the model ends at that layer's
    input. If it comes out of a layer with a built-in final activation (e.g. `Dense(...,
    activation="softmax")`), a linear twin of that layer (same config, activation "linear",
    weights copied) is applied to the same input. The user's model and weights are not changed:
    every other layer is shared, read-only. Other outputs pass through untouched.
    """
    sub = single_output_model(model, index)
    activation = output_activation(model, index)
    if activation not in ("softmax", "sigmoid"):
        return sub
    layer, inputs = _producer(model.outputs[index])
    if isinstance(layer, keras.Model) or len(inputs) != 1:
        return sub  # Nested or multi-input producer: leave as is (documented limitation).
    if isinstance(layer, keras.layers.Softmax | keras.layers.Activation):
        return keras.Model(model.inputs, inputs[0])
    config = layer.get_config()
    config["activation"] = "linear"
    config["name"] = f"{layer.name}_linear"
    twin = layer.__class__.from_config(config)
    logits = twin(inputs[0])
    twin.set_weights(layer.get_weights())
    return keras.Model(model.inputs, logits)


def select_output(outputs, index: int, names: list[str]):
    """Picks output `index` from what calling a model returned (tensor, list or dict)."""
    if isinstance(outputs, dict):
        return outputs[names[index]] if names else list(outputs.values())[index]
    if isinstance(outputs, list | tuple):
        return outputs[index]
    return outputs


# model -> {output position: compiled function}. Weak keys: the compiled functions hold a
# sub-model that shares the model's layers but not the model object, so entries go with it.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_output(model: keras.Model, index: int):
    """A `tf.function` computing output `index` of `model`, cached while the model lives, so
    that metrics called batch after batch in a loop trace the model once."""
    outputs = getattr(model, "outputs", None)
    if not outputs:  # Subclassed model: no graph to cut, nothing safe to cache.
        names = output_names(model)
        return tf.function(lambda x: select_output(model(x, training=False), index, names))
    per_model = _COMPILED.setdefault(model, {})
    if index not in per_model:
        sub = keras.Model(model.inputs, outputs[index])
        per_model[index] = tf.function(lambda x: sub(x, training=False), reduce_retracing=True)
    return per_model[index]


class BatchedPredictor:
    """Runs one output of a model over many inputs in fixed-size batches.

    Inputs are produced chunk by chunk by a callable, so that B images x S perturbation steps
    never sit in memory at once. The last, short chunk is padded to the batch size so that the
    compiled function is traced once, whatever the number of inputs.
    """

    def __init__(self, model: keras.Model, index: int, batch_size: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
            )
        self.batch_size = batch_size
        self._fn = compiled_output(model, index)

    def __call__(self, total: int, make_chunk) -> np.ndarray:
        """Outputs for inputs 0..total-1, where `make_chunk(start, stop)` builds inputs
        start..stop-1 as an array; returns a float64 array (total, ...)."""
        size = min(self.batch_size, total)
        results = []
        for start in range(0, total, size):
            chunk = np.asarray(make_chunk(start, min(start + size, total)), np.float32)
            short = size - len(chunk)
            if short:
                pad = np.repeat(chunk[-1:], short, axis=0)
                chunk = np.concatenate([chunk, pad], axis=0)
            out = np.asarray(self._fn(tf.convert_to_tensor(chunk)), np.float64)
            results.append(out[: size - short])
        return np.concatenate(results, axis=0)

    def on_array(self, x: np.ndarray) -> np.ndarray:
        """Outputs for an array already in memory."""
        return self(len(x), lambda start, stop: x[start:stop])
