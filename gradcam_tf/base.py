"""The machinery every explainer shares, and the base class of the CAM methods.

`Explainer` owns the input checks, the flat replay of the model (`gradcam_tf.graph.FlatGraph`,
built once per explainer), the choice of outputs and the targets. `BaseCAM` adds target layers
(resolved and planned once per layer set, then cached), the gradient tape, ReLU, resize and
normalisation; a CAM method overrides one hook, `channel_weights` (Grad-CAM-like methods) or
`compute_map` (pixel-wise methods).

Multi-output models, one forward and one backward pass. Summing the scores of all outputs and
taking one gradient would mix exits: when a later exit reads an earlier exit's target layer (as
every later MSD-Net exit reads an earlier block), d(sum_j s_j)/dA_k carries the later exits'
gradients too. Instead, for output k with target activation A_k, the replay adds a zero "tap"
Z_k to A_k on the edges into the consumers of A_k that lead to output k, and only on those. If
none of these consumers leads to another explained output, only s_k depends on Z_k, and all of
s_k's dependence on A_k goes through those edges, so d(sum_j s_j)/dZ_k = ds_k/dA_k exactly. One
`tape.gradient(sum_j s_j, [Z_1, ..., Z_K])` then gives every output's gradient. This holds when
the target layer is inside exit k's own head, or is the tensor exit k's head reads, even if later
blocks read it too (`exit{k}_features`). When a consumer of A_k leads both to output k and to
another explained output (two heads sharing a pooling layer, an output computed from another
output's logits), that output falls back to its own `tape.gradient(s_k, A_k)` on a persistent
tape: still one forward pass, one more backward pass. `BaseCAM.gradient_passes` reports the count.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np
import scipy.ndimage
import tensorflow as tf

from gradcam_tf.graph import FlatGraph, Tap
from gradcam_tf.layers import auto_target, check_target_tensor, resolve_layer
from gradcam_tf.targets import (
    Target,
    check_score_on,
    group_scores,
    make_scorer,
    resolve_target,
    split_targets,
)

__all__ = ["BaseCAM", "CamContext", "Explainer", "normalize_maps", "resize_maps"]

EPSILON = 1e-7
RESIZE_MODES = ("zoom", "bilinear", None)


# ------------------------------------------------------------------------------------------
# Map post-processing
# ------------------------------------------------------------------------------------------


def normalize_maps(maps) -> np.ndarray:
    """Per-sample min-max scaling to [0, 1]: ``(m - min) / (max - min + 1e-7)``.

    The epsilon is tf-keras-vis's (``keras.backend.epsilon()``); a constant or all-zero map comes
    back as zeros, never NaN.

    Args:
        maps: array (batch, ...).

    Returns:
        float32 array of the same shape.
    """
    maps = np.asarray(maps, np.float32)
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    high = maps.max(axis=axes, keepdims=True)
    return ((maps - low) / (high - low + np.float32(EPSILON))).astype(np.float32)


def resize_maps(maps, size: tuple[int, int], mode: str | None = "zoom") -> np.ndarray:
    """Resizes maps (batch, h, w) to (batch, *size).

    Args:
        maps: array (batch, h, w).
        size: (height, width) wanted.
        mode: "zoom": ``scipy.ndimage.zoom(maps, (1, H/h, W/w), order=1)``, linear interpolation
            with the corners of the map on the corners of the image, exactly as tf-keras-vis
            (the default, for parity); "bilinear": ``tf.image.resize(..., "bilinear")``,
            half-pixel centres, as most image libraries; None: no resize (feature-map
            resolution).

    Returns:
        float32 array.
    """
    maps = np.asarray(maps, np.float32)
    if mode is None or tuple(maps.shape[1:3]) == tuple(size):
        return maps
    height, width = maps.shape[1:3]
    if mode == "zoom":
        factors = (1.0, size[0] / height, size[1] / width)
        return scipy.ndimage.zoom(maps, factors, order=1).astype(np.float32)
    if mode == "bilinear":
        resized = tf.image.resize(maps[..., None], size, method="bilinear")
        return resized.numpy()[..., 0].astype(np.float32)
    raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={mode!r}")


# ------------------------------------------------------------------------------------------
# Explainer: what every method needs
# ------------------------------------------------------------------------------------------


class Explainer:
    """Base of every explainer: model replay, input checks, outputs and targets.

    Args:
        model: a functional or Sequential Keras 3 model with one image input (batch, height,
            width, channels). Nested models are opened up. The model is never modified.
        score_on: "logits" (default) scores the pre-softmax/-sigmoid output, read without
            touching the model's layers; "probabilities" scores the softmax/sigmoid output.

    Raises:
        ValueError: for a subclassed or unbuilt model, several inputs, a non-image input or an
            unknown `score_on`.
    """

    def __init__(self, model: keras.Model, *, score_on: str = "logits"):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`model` must be a keras.Model. Received: model of type {type(model).__name__}"
            )
        self.model = model
        self.score_on = check_score_on(score_on)
        self._graph = FlatGraph(model)
        if len(self._graph.inputs) != 1:
            raise ValueError(
                f"gradcam_tf explains models with one image input; this model has "
                f"{len(self._graph.inputs)} inputs."
            )
        info = self._graph.tensors[self._graph.inputs[0]]
        if len(info.shape) != 4:
            raise ValueError(
                f"gradcam_tf explains image models with a 4-D input (batch, height, width, "
                f"channels). Received: a model input of shape {info.shape}"
            )
        self._input_shape, self._input_dtype = info.shape, info.dtype
        self._scorers: dict[int, object] = {}

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in output order."""
        return list(self._graph.output_names)

    # -- inputs -------------------------------------------------------------------------------

    def _images(self, images) -> tf.Tensor:
        """Checks a batch of images against the model input; returns it as a tensor."""
        if isinstance(images, tf.Tensor):
            dtype, floating, shape = images.dtype.name, images.dtype.is_floating, images.shape
        else:
            images = np.asarray(images)
            dtype, floating, shape = str(images.dtype), images.dtype.kind == "f", images.shape
        shape = tuple(shape)
        expected = "(batch, " + ", ".join(str(d) for d in self._input_shape[1:]) + ")"
        if "float" in self._input_dtype and not floating:
            raise ValueError(
                f"`images` must be floating point, already preprocessed as the model expects; "
                f"received dtype {dtype}. Convert with `images.astype('float32')`."
            )
        if len(shape) != 4:
            hint = " For one image, pass `image[None]`." if len(shape) == 3 else ""
            raise ValueError(
                f"`images` must be a 4-D batch of shape {expected}; received shape {shape}.{hint}"
            )
        if shape[0] == 0:
            raise ValueError(f"`images` is an empty batch; received shape {shape}.")
        for axis, (got, want) in enumerate(zip(shape[1:], self._input_shape[1:]), start=1):
            if want is not None and got != want:
                raise ValueError(
                    f"`images` must have shape {expected} to match the model input; received "
                    f"shape {shape} (axis {axis} is {got}, expected {want})."
                )
        images = tf.cast(images, self._input_dtype)
        if images.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(images))):
            raise ValueError("`images` contains NaN or infinite values.")
        return images

    def _positions(self, outputs) -> list[int]:
        """Output positions from None (all), an index, a name or a list of them."""
        names, count = self._graph.output_names, len(self._graph.outputs)
        if outputs is None:
            return list(range(count))
        single = not isinstance(outputs, list | tuple)
        items = [outputs] if single else list(outputs)
        positions = []
        for item in items:
            if isinstance(item, str) and item in names:
                positions.append(names.index(item))
            elif isinstance(item, int | np.integer) and not isinstance(item, bool):
                if not -count <= item < count:
                    raise ValueError(
                        f"Output index out of range for a model with {count} outputs. "
                        f"Received: outputs={outputs!r}"
                    )
                positions.append(int(item) % count)
            else:
                raise ValueError(
                    f"`outputs` must be None, an output index or name ({names}), or a list of "
                    f"them. Received: outputs={outputs!r}"
                )
        if len(set(positions)) != len(positions) or not positions:
            raise ValueError(f"`outputs` must list distinct outputs. Received: outputs={outputs!r}")
        return positions

    def _scorer(self, position: int):
        if position not in self._scorers:
            self._scorers[position] = make_scorer(self._graph, position, self.score_on)
        return self._scorers[position]

    def _score_groups(self, position: int, target: Target, images, batch: int) -> tf.Tensor:
        """Target scores (groups, batch) of perturbed copies of the batch, group-major."""
        scorer = self._scorer(position)
        values, _ = self._graph.run([tf.convert_to_tensor(images)], [scorer.tensor])
        return group_scores(target, scorer.transform(values[scorer.tensor]), batch)


# ------------------------------------------------------------------------------------------
# CAM methods
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CamContext:
    """Everything a CAM hook may need, for one output and one batch.

    Attributes:
        activations: A, the target layer's activations (batch, h, w, channels), float32.
        gradients: dS/dA for the batch's target scores S, same shape (None for gradient-free
            methods).
        scores: the target scores S (batch,).
        images: the input batch.
        target: the resolved target (class ids or a callable).
        layer: the target layer's qualified name.
        output: the output's name.
        score: ``score(images) -> (groups, batch)``: target scores of perturbed copies of the
            batch stacked group-major ((groups * batch, height, width, channels)), used by
            Score-CAM.
    """

    activations: tf.Tensor
    gradients: tf.Tensor | None
    scores: tf.Tensor
    images: tf.Tensor
    target: Target
    layer: str
    output: str
    score: Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class _Plan:
    positions: tuple[int, ...]
    layers: tuple[int, ...]
    taps: dict  # index in `positions` -> Tap: gradient from the shared backward pass
    separate: tuple[int, ...]  # indices whose gradient needs a backward pass of its own


class BaseCAM(Explainer):
    """Base class of the class-activation-map methods.

    The pipeline, for each explained output: target scores S (one per sample) on the output's
    logits; activations A of the target layer and, for gradient methods, G = dS/dA from one
    tape; ``cam = ReLU(compute_map(ctx))``; resize to the input; per-sample min-max
    normalisation (see `normalize_maps`). Subclasses override `channel_weights` (the map is
    ``sum_c w_c A_c``) or `compute_map`.

    Args:
        model: a functional or Sequential Keras 3 model with one image input; nested models are
            opened up, and the model is never modified.
        score_on: "logits" (default) or "probabilities" (see `Explainer`).
    """

    needs_gradients = True

    def __init__(self, model: keras.Model, *, score_on: str = "logits"):
        super().__init__(model, score_on=score_on)
        self._plans: dict = {}

    # -- public API ---------------------------------------------------------------------------

    @property
    def target_layers(self) -> list[str]:
        """The layer the automatic rule picks for each model output (qualified names).

        The rule: walking back from the output, the last layer whose output is spatial (4-D,
        larger than 1x1), whatever its class; see `gradcam_tf.layers`.
        """
        graph = self._graph
        return [graph.tensor_name(auto_target(graph, k)) for k in range(len(graph.outputs))]

    def explain(
        self,
        images,
        targets=None,
        layers="auto",
        outputs=None,
        resize: str | None = "zoom",
        normalize: bool = True,
    ) -> list[np.ndarray]:
        """Class activation maps for a batch of images.

        Args:
            images: float array or tensor (batch, height, width, channels), preprocessed as the
                model expects.
            targets: what to explain, per output: None (predicted class, the default), an int
                (one class for all images), class ids (one per image), one-hot labels
                (batch, classes) or a callable ``score(output) -> (batch,)``; for several
                outputs, a list with one such spec per output, or one spec for all (see
                `gradcam_tf.targets`).
            layers: "auto" (the last spatial layer before each output), a layer name (also
                inside nested models: "backbone/conv2" or "conv2") or keras Layer used for
                every output, or a list with one name/Layer/"auto" per explained output.
            outputs: which outputs to explain: None (all), an index, a name, or a list.
            resize: "zoom" (tf-keras-vis' corner-aligned linear zoom, the default), "bilinear"
                (``tf.image.resize``) or None (feature-map resolution); see `resize_maps`.
            normalize: scale each map to [0, 1] (per-sample min-max, epsilon 1e-7).

        Returns:
            One float32 array (batch, height, width) per explained output, in [0, 1] when
            normalized; (batch, h, w) at the layer's resolution when `resize` is None.

        Raises:
            ValueError: for images of the wrong rank, shape or dtype, targets of the wrong length
                or out of range, an unknown layer (with suggestions), a non-spatial layer, a
                layer that does not feed its output, or an output without a spatial layer.
        """
        x = self._images(images)
        if resize not in RESIZE_MODES:
            raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={resize!r}")
        plan = self._plan(self._positions(outputs), layers)
        specs = split_targets(targets, len(plan.positions))
        results = self._forward(x, plan, specs)
        maps = []
        for ctx in results:
            cam = tf.nn.relu(tf.cast(self.compute_map(ctx), tf.float32)).numpy()
            cam = resize_maps(cam, tuple(x.shape[1:3]), resize)
            maps.append(normalize_maps(cam) if normalize else cam.astype(np.float32))
        return maps

    def gradient_passes(self, layers="auto", outputs=None) -> int:
        """How many backward passes `explain` makes for these layers and outputs.

        1 when every output's gradient comes out of the shared pass (see the module docstring),
        plus one per output whose target layer also feeds another explained output through the
        same consumer; 0 for gradient-free methods. The forward pass is always one.
        """
        if not self.needs_gradients:
            return 0
        plan = self._plan(self._positions(outputs), layers)
        return int(bool(plan.taps)) + len(plan.separate)

    # -- hooks --------------------------------------------------------------------------------

    def channel_weights(self, ctx: CamContext) -> tf.Tensor:
        """The weight of each channel of A, (batch, channels). Grad-CAM-like methods override
        this."""
        raise NotImplementedError(f"{type(self).__name__} must override channel_weights")

    def compute_map(self, ctx: CamContext) -> tf.Tensor:
        """The map before ReLU, (batch, h, w). Default: ``sum_c w_c A_c`` with w from
        `channel_weights`; pixel-wise methods override this."""
        weights = tf.cast(self.channel_weights(ctx), tf.float32)
        return tf.einsum("bhwc,bc->bhw", ctx.activations, weights)

    # -- internals ----------------------------------------------------------------------------

    def _layer_tensors(self, positions: Sequence[int], layers) -> list[int]:
        graph = self._graph
        if isinstance(layers, list | tuple):
            if len(layers) != len(positions):
                raise ValueError(
                    f"`layers` gives one layer per explained output, and there are "
                    f"{len(positions)} ({[graph.output_names[k] for k in positions]}); received "
                    f"{len(layers)}. Received: layers={layers!r}"
                )
            specs = list(layers)
        else:
            specs = [layers] * len(positions)
        tensors = []
        for spec, position in zip(specs, positions):
            if spec is None or (isinstance(spec, str) and spec == "auto"):
                tensor = auto_target(graph, position)
            else:
                tensor = resolve_layer(graph, spec)
            check_target_tensor(graph, tensor, position, self.needs_gradients)
            tensors.append(tensor)
        return tensors

    def _plan(self, positions: Sequence[int], layers) -> _Plan:
        tensors = self._layer_tensors(positions, layers)
        key = (tuple(positions), tuple(tensors))
        if key in self._plans:
            return self._plans[key]
        graph = self._graph
        taps, separate = {}, []
        if self.needs_gradients:
            scored = {self._scorer(k).tensor for k in positions}

            def reach(step_index):
                return set().union(*(graph.reach[t] for t in graph.steps[step_index].outputs))

            for index, (position, tensor) in enumerate(zip(positions, tensors)):
                others = set(positions) - {position}
                into = [c for c in graph.consumers.get(tensor, []) if position in reach(c)]
                mixed = tensor in scored or any(reach(c) & others for c in into)
                if mixed or not into:
                    separate.append(index)
                else:
                    taps[index] = Tap(tensor, frozenset(into))
        plan = _Plan(tuple(positions), tuple(tensors), taps, tuple(separate))
        self._plans[key] = plan
        return plan

    def _forward(self, x: tf.Tensor, plan: _Plan, specs: list) -> list[CamContext]:
        """One forward pass (and the backward passes of `plan`) for all explained outputs."""
        graph = self._graph
        scorers = [self._scorer(k) for k in plan.positions]
        fetch = list(dict.fromkeys([*plan.layers, *(s.tensor for s in scorers)]))
        gradients_on = self.needs_gradients
        tape_context = (
            tf.GradientTape(persistent=bool(plan.separate), watch_accessed_variables=False)
            if gradients_on
            else contextlib.nullcontext()
        )
        with tape_context as tape:
            values, tap_values = graph.run(
                [x],
                fetch,
                taps=plan.taps if gradients_on else None,
                tape=tape,
                watch=[plan.layers[i] for i in plan.separate],
            )
            scored, targets, scores = [], [], []
            for spec, scorer in zip(specs, scorers):
                scored.append(scorer.transform(values[scorer.tensor]))
                targets.append(resolve_target(spec, scored[-1], scorer.name))
                scores.append(targets[-1].scores(scored[-1]))
            # Sums are taken inside the tape: a persistent tape records nothing after it exits.
            sums = [tf.reduce_sum(score) for score in scores]
            if gradients_on and plan.taps:
                total = tf.add_n([sums[i] for i in plan.taps])
        gradients: list = [None] * len(plan.positions)
        if gradients_on:
            if plan.taps:
                keys = list(plan.taps)
                for i, grad in zip(keys, tape.gradient(total, [tap_values[i] for i in keys])):
                    gradients[i] = grad
            for i in plan.separate:
                gradients[i] = tape.gradient(sums[i], values[plan.layers[i]])
            for i, grad in enumerate(gradients):
                activation = values[plan.layers[i]]
                gradients[i] = tf.zeros_like(activation) if grad is None else grad
                gradients[i] = tf.cast(gradients[i], tf.float32)
            del tape
        contexts = []
        for i, position in enumerate(plan.positions):
            batch = x.shape[0]
            contexts.append(
                CamContext(
                    activations=tf.cast(values[plan.layers[i]], tf.float32),
                    gradients=gradients[i],
                    scores=scores[i],
                    images=x,
                    target=targets[i],
                    layer=graph.tensor_name(plan.layers[i]),
                    output=scorers[i].name,
                    score=lambda images, p=position, t=targets[i], b=batch: self._score_groups(
                        p, t, images, b
                    ),
                )
            )
        return contexts
