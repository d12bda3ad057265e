"""BatchNorm folding, an inference-time graph rewrite for fast MSD-Net inference.

`fold_batchnorm(model)`: a new functional model in which every ``Conv -> BatchNormalization``
pair is one convolution with bias (the BatchNorm's inference-mode affine map folded into kernel
and bias). Outputs equal the original model's in inference mode to float32 rounding; the graph
loses one multiply and one add per conv, and TensorFlow's grappler then fuses conv + bias + ReLU
into one oneDNN kernel. (TensorFlow's CPU thread pools: `msdnet_tf.runtime`.)
"""

from __future__ import annotations

import copy

import keras
import numpy as np

__all__ = ["fold_batchnorm", "foldable_pairs"]

_CONV_CLASSES = ("Conv1D", "Conv2D", "Conv3D")


def _history(value):
    """The ``[layer_name, node_index, tensor_index]`` of a serialized Keras tensor, else None."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return value["config"]["keras_history"]
    return None


def _tensor_refs(value):
    """Every serialized Keras tensor inside a node's (nested) args/kwargs."""
    history = _history(value)
    if history is not None:
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensor_refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensor_refs(item)


def _output_refs(output_layers):
    """The model's output references, as ``[name, node, tensor]`` lists (one or many outputs)."""
    if output_layers and isinstance(output_layers[0], str):
        return [output_layers]
    return list(output_layers)


def _functional_config(model) -> dict:
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    config = model.get_config()
    if not (
        isinstance(config, dict)
        and "output_layers" in config
        and all("inbound_nodes" in layer for layer in config.get("layers", []))
    ):
        raise ValueError(
            "`fold_batchnorm` rewrites functional models (built with keras.Input and layer "
            f"calls); {type(model).__name__} is not one. Received: model={model.name!r}"
        )
    return config


def foldable_pairs(model) -> list[tuple[str, str]]:
    """The ``(conv_name, batchnorm_name)`` pairs that `fold_batchnorm` would merge.

    A pair qualifies when a BatchNormalization layer, called once, reads the only output of a
    Conv1D/2D/3D layer that is called once and feeds nothing else, normalises the channel axis of
    that convolution, and is not itself a model output (outputs keep their names).
    """
    config = _functional_config(model)
    entries = {layer["name"]: layer for layer in config["layers"]}
    uses: dict[str, int] = {}
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for ref in _tensor_refs(node):
                name = _history(ref)[0]
                uses[name] = uses.get(name, 0) + 1
    outputs = {ref[0] for ref in _output_refs(config["output_layers"])}
    for ref in _output_refs(config["output_layers"]):
        uses[ref[0]] = uses.get(ref[0], 0) + 1

    pairs = []
    for layer in config["layers"]:
        if layer["class_name"] != "BatchNormalization" or layer["name"] in outputs:
            continue
        if len(layer["inbound_nodes"]) != 1:
            continue
        refs = list(_tensor_refs(layer["inbound_nodes"][0]))
        if len(refs) != 1:
            continue
        conv = entries[_history(refs[0])[0]]
        if (
            conv["class_name"] not in _CONV_CLASSES
            or conv.get("module") != "keras.layers"
            or len(conv["inbound_nodes"]) != 1
            or uses.get(conv["name"], 0) != 1
            or conv["config"].get("activation", "linear") not in ("linear", None)
        ):
            continue
        rank = int(conv["class_name"][4])
        channel_axis = rank + 1 if conv["config"].get("data_format") == "channels_last" else 1
        axis = layer["config"]["axis"]
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if not isinstance(axis, int) or axis % (rank + 2) != channel_axis:
            continue
        pairs.append((conv["name"], layer["name"]))
    return pairs


def _folded_weights(conv, bn):
    """Kernel and bias of ``bn(conv(x))`` in inference mode, computed in float64."""
    kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    bias = (
        np.asarray(keras.ops.convert_to_numpy(conv.bias), np.float64)
        if conv.use_bias
        else np.zeros(kernel.shape[-1])
    )
    mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
    variance = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    gamma = np.asarray(keras.ops.convert_to_numpy(bn.gamma), np.float64) if bn.scale else 1.0
    beta = np.asarray(keras.ops.convert_to_numpy(bn.beta), np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(variance + bn.epsilon)
    # The kernel's last axis is the output channel for Conv1D/2D/3D (groups included).
    return kernel * scale, (bias - mean) * scale + beta


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of `model` with every Conv -> BatchNormalization pair folded into one conv.

    Inference-mode BatchNorm is the per-channel affine map
    ``y = gamma * (z - mean) / sqrt(var + eps) + beta``; applied to ``z = conv(x) + b`` it equals a
    convolution with kernel ``K * s`` and bias ``(b - mean) * s + beta``, where
    ``s = gamma / sqrt(var + eps)`` (computed in float64, stored in the conv's dtype). The folded
    conv keeps its layer name and config (``use_bias=True``); the BatchNorm layer disappears and
    its consumers read the conv. Every other layer, and every output name, is kept. The pairs
    merged are those of `foldable_pairs`; other BatchNorm layers are left as they are.

    The result is a plain functional model of standard layers (``.keras`` save/load in safe mode
    works). It is for inference: training it trains a different model (no BatchNorm). The input
    model is not modified.

    Args:
        model: a functional `keras.Model`, built (its weights exist).

    Returns:
        A new `keras.Model` whose outputs equal ``model(x, training=False)`` to float32 rounding.

    Raises:
        ValueError: `model` is not a functional model.

    Example:
        >>> from msdnet_tf import build_preset
        >>> model = build_preset("testing")
        >>> fast = fold_batchnorm(model)
        >>> any(isinstance(layer, keras.layers.BatchNormalization) for layer in fast.layers)
        False
        >>> fast.output_names == model.output_names
        True
    """
    config = copy.deepcopy(_functional_config(model))
    pairs = foldable_pairs(model)
    bn_of_conv = dict(pairs)
    entries = {layer["name"]: layer for layer in config["layers"]}

    # The tensor each BatchNorm read (its conv's output) replaces the BatchNorm's output.
    replacement = {}
    for bn in bn_of_conv.values():
        (ref,) = _tensor_refs(entries[bn]["inbound_nodes"][0])
        replacement[bn] = _history(ref)
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in replacement]
    for layer in config["layers"]:
        if layer["name"] in bn_of_conv:
            layer["config"]["use_bias"] = True
        for node in layer["inbound_nodes"]:
            for ref in _tensor_refs(node):
                history = ref["config"]["keras_history"]
                if history[0] in replacement:
                    ref["config"]["keras_history"] = list(replacement[history[0]])

    folded = keras.Model.from_config(config)
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        if layer.name in bn_of_conv:
            kernel, bias = _folded_weights(source, model.get_layer(bn_of_conv[layer.name]))
            layer.kernel.assign(kernel.astype(layer.kernel.dtype))
            layer.bias.assign(bias.astype(layer.bias.dtype))
        elif source.weights:
            layer.set_weights(source.get_weights())
    return folded
