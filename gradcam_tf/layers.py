"""Target layers: automatic choice per output, and lookup by (qualified) name.

A map explains where the evidence lies only if it keeps enough cells to say so: bilinearly
upsampled, a 2x2 map peaks on one of four blobs whatever the image holds. So the automatic rule
("auto", `RULES[0]` = "localize") is, per model output: walk the graph backwards from the output
and stop at every tensor that is a *localizing* map, i.e. 4-D (batch, height, width, channels)
with ``min(height, width) >= min_size`` (an unknown, ``None`` size counts as large enough); of
the tensors where the walk stopped, take the one computed last. Smaller spatial maps on the way
(a head's strided convs, a 2x2 or 4x4 map) are walked through, and so are the outputs of
`ZeroPadding2D` and `Cropping2D` layers, whose cells are shifted off the image's grid. With the
default ``min_size = MIN_MAP_SIZE = 7``, the 7x7 grid that standard ImageNet backbones end with
at 224 pixels (stride 32: ResNet, VGG's pool5, MobileNet, EfficientNet) still qualifies, so
their usual layer is kept; on MSD-Net it is ``exit{k}_features``, the block features each head
reads (8x8 at 32 pixels, 7x7 at 224), and not the head's last conv (2x2) nor its first (4x4).
The localization benchmark
(benchmarks/localization.py, figures in benchmarks/RESULTS.md) compares the candidate layers. If
no tensor on the path reaches ``min_size`` (a very small input), the spatial tensor of largest
``min(height, width)`` is taken, the last computed among ties.

The previous rule stays available by name, ``layers="last_spatial"`` (`RULES[1]`): stop at every
spatial tensor, 4-D with height > 1 and width > 1, and take the one computed last, i.e. the
nearest spatial layer before the output, whatever its class (a Conv2D, SeparableConv2D,
DepthwiseConv2D or Conv2DTranspose, a custom layer, or the ReLU, BatchNormalization, Identity or
pooling layer that follows a conv). Both rules skip 1x1 maps (the output of a global pooling
kept as 4-D, a 1x1 "logits" conv on a 1x1 map), as torch-cam does, and give each output its own
layer: in a multi-exit network, a layer on the path to that exit.

Names: a layer inside a nested model is ``"outer/inner"`` (``"backbone/conv2"``); the plain name
(``"conv2"``) works when it is unique; the name of a nested model stands for its output. A layer
called more than once (shared weights) is ``"name"`` for its first call and ``"name@1"``,
``"name@2"``... for the next ones.
"""

from __future__ import annotations

import difflib

import keras

from gradcam_tf.graph import FlatGraph

__all__ = [
    "MIN_MAP_SIZE",
    "RULES",
    "auto_target",
    "check_rule",
    "check_target_tensor",
    "find_target_layers",
    "resolve_layer",
    "spatial_layer_names",
]

RULES = ("localize", "last_spatial")
MIN_MAP_SIZE = 7


def is_spatial(graph: FlatGraph, tensor: int) -> bool:
    """Whether `tensor` is a 4-D float map larger than 1x1."""
    info = graph.tensors[tensor]
    if len(info.shape) != 4 or "float" not in info.dtype:
        return False
    height, width = info.shape[1], info.shape[2]
    return (height is None or height > 1) and (width is None or width > 1)


# Layers whose map is not aligned with the image (a padded map's border is no image content).
_REFRAMING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def check_rule(rule: str, min_size: int) -> None:
    """Checks an automatic rule (one of `RULES`) and its minimum map side (an int >= 2).

    Raises:
        ValueError: for an unknown rule or a bad `min_size`.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}. Received: rule={rule!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 2:
        raise ValueError(f"`min_size` must be an int >= 2. Received: min_size={min_size!r}")


def _smaller_side(graph: FlatGraph, tensor: int) -> float:
    """min(height, width) of a 4-D tensor, an unknown size counting as infinite."""
    sides = [s for s in graph.tensors[tensor].shape[1:3] if s is not None]
    return min(sides) if sides else float("inf")


def auto_target(
    graph: FlatGraph, position: int, rule: str = "localize", min_size: int = MIN_MAP_SIZE
) -> int:
    """The tensor the automatic rule picks for output `position` (see the module docstring).

    Args:
        graph: the model's flat graph.
        position: the output's index.
        rule: "localize" (the last map of at least `min_size` cells a side on the output's
            path) or "last_spatial" (the last map larger than 1x1).
        min_size: the smallest ``min(height, width)`` the "localize" rule accepts.

    Raises:
        ValueError: if no spatial layer lies before the output, or for a bad rule.
    """
    check_rule(rule, min_size)
    output = graph.outputs[position]
    stops, passed, stack, seen = [], [], [output], {output}
    while stack:
        tensor = stack.pop()
        step = graph.producer(tensor)
        if step is None:  # a model input is not a layer
            continue
        if is_spatial(graph, tensor):
            if rule == "last_spatial" or (
                _smaller_side(graph, tensor) >= min_size
                and not isinstance(step.operation, _REFRAMING)
            ):
                stops.append(tensor)
                continue
            passed.append(tensor)
        for parent in step.inputs:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    if not stops and passed:  # nothing reaches min_size: the largest map, the last among ties
        return max(passed, key=lambda t: (_smaller_side(graph, t), graph.tensors[t].step))
    if not stops:
        raise ValueError(
            f"Output {graph.output_names[position]!r} has no spatial layer before it (a 4-D "
            f"(batch, height, width, channels) output larger than 1x1), so there is no map to "
            f"explain it with. Use a gradient method on the input (Saliency) instead."
        )
    return max(stops, key=lambda t: graph.tensors[t].step)


def _suggest(name: str, names: list[str]) -> str:
    leaves = sorted({n.rsplit("/", 1)[-1] for n in names} | set(names))
    close = difflib.get_close_matches(name, leaves, n=5, cutoff=0.5)
    if close:
        return f"Did you mean {' or '.join(repr(c) for c in close)}?"
    return f"Known layers include {sorted(names)[:10]}."


def resolve_layer(graph: FlatGraph, layer) -> int:
    """The flat tensor of a layer given by name or as a `keras.layers.Layer`.

    Raises:
        ValueError: for an unknown or ambiguous name (with suggestions), or a layer that is not
            part of the model.
    """
    if isinstance(layer, keras.layers.Layer):
        calls = [s for s in graph.steps if s.operation is layer and len(s.outputs) == 1]
        if len(calls) == 1:
            return calls[0].outputs[0]
        if not calls:
            if layer.name in graph.names or any(
                n.rsplit("/", 1)[-1] == layer.name for n in graph.names
            ):
                return resolve_layer(graph, layer.name)
            raise ValueError(f"Layer {layer.name!r} is not part of the model.")
        names = [s.name for s in calls]
        raise ValueError(
            f"Layer {layer.name!r} is called {len(calls)} times in the model; pass one of the "
            f"names {names}."
        )
    if not isinstance(layer, str):
        raise ValueError(
            f"A target layer is a layer name, a keras Layer or 'auto'. Received: {layer!r}"
        )
    if layer in graph.names:
        return graph.names[layer]
    matches = [n for n in graph.names if n.rsplit("/", 1)[-1] == layer]
    if len(matches) == 1:
        return graph.names[matches[0]]
    if len(matches) > 1:
        raise ValueError(
            f"Layer name {layer!r} is ambiguous: it names {sorted(matches)}. Pass the qualified "
            f"name."
        )
    raise ValueError(f"No layer named {layer!r} in the model. {_suggest(layer, list(graph.names))}")


def check_target_tensor(graph: FlatGraph, tensor: int, position: int, gradients: bool) -> None:
    """A target layer must give a 4-D map and, for gradient methods, feed the output.

    Raises:
        ValueError: otherwise, naming the layer, its shape and the output.
    """
    name, shape = graph.tensor_name(tensor), graph.tensors[tensor].shape
    if len(shape) != 4:
        raise ValueError(
            f"Layer {name!r} outputs shape {shape}; a class activation map needs a 4-D "
            f"(batch, height, width, channels) activation. Spatial layers: "
            f"{_spatial_names(graph)[-5:]}"
        )
    if gradients and position not in graph.reach[tensor]:
        output = graph.output_names[position]
        feeding = [
            graph.tensor_name(t) for t in _spatial_tensors(graph) if position in graph.reach[t]
        ]
        raise ValueError(
            f"Layer {name!r} does not feed output {output!r}, so its gradient would be zero. "
            f"Spatial layers before {output!r}: {feeding[-5:]}"
        )


def _spatial_tensors(graph: FlatGraph) -> list[int]:
    return [
        t
        for step in graph.steps
        for t in step.outputs
        if len(step.outputs) == 1 and is_spatial(graph, t)
    ]


def _spatial_names(graph: FlatGraph) -> list[str]:
    return [graph.tensor_name(t) for t in _spatial_tensors(graph)]


def find_target_layers(
    model: keras.Model, rule: str = "localize", min_size: int = MIN_MAP_SIZE
) -> list[str]:
    """The layer the automatic rule picks for each output of `model`, by qualified name.

    Pass the result as ``layers=`` to use another `min_size` than the explainers' default.

    Args:
        model: a functional or Sequential Keras model (nested models are searched too).
        rule: "localize" (default) or "last_spatial" (see the module docstring).
        min_size: the smallest map side (cells) the "localize" rule accepts.

    Returns:
        One qualified layer name per model output.

    Raises:
        ValueError: if an output has no spatial layer before it.

    Example:
        >>> gradcam_tf.find_target_layers(model)
        ['exit1_features', 'exit2_features', 'exit3_features']
        >>> gradcam_tf.find_target_layers(model, "last_spatial")
        ['exit1_conv_out', 'exit2_conv_out', 'exit3_conv_out']
    """
    check_rule(rule, min_size)
    graph = FlatGraph(model)
    return [
        graph.tensor_name(auto_target(graph, k, rule, min_size)) for k in range(len(graph.outputs))
    ]


def spatial_layer_names(model: keras.Model) -> list[str]:
    """Qualified names of every layer with a spatial (4-D, larger than 1x1) output, in
    execution order; any of them can be passed as a target layer."""
    return _spatial_names(FlatGraph(model))
