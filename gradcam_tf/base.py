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

Compiled passes. Replayed eagerly, layer by layer in Python, the passes of a network of a few
hundred layers cost several times the network's own compiled forward pass. So (unless
``compiled=False``) the forward and backward passes are traced once into a `tf.function` per
kind of call (outputs, target layers, and for each output whether its classes are given or
predicted), with a free batch axis, and cached on the explainer: a loop of calls traces nothing
more (`Explainer.trace_count`) and the model's variables are read live, so the graph follows
training. Class ids are checked before the graph runs; callable targets stay eager (they may
keep Python state); the hooks run eagerly on the graph's activations and gradients, so the
compiled maps are those of the eager replay. Score-CAM's masked forward passes are compiled per
output the same way. The 'zoom' resize (`zoom_maps`) is scipy's order-1 zoom computed batched
with NumPy, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.graph import FlatGraph, Tap
from gradcam_tf.layers import auto_target, check_target_tensor, resolve_layer
from gradcam_tf.targets import (
    Target,
    check_score_on,
    class_ids,
    group_scores,
    make_scorer,
    predicted_classes,
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
            (the default, for parity; computed batched by `zoom_maps`, bit for bit);
            "bilinear": ``tf.image.resize(..., "bilinear")``, half-pixel centres, as most image
            libraries; None: no resize (feature-map resolution).

    Returns:
        float32 array.
    """
    maps = np.asarray(maps, np.float32)
    if mode is None or tuple(maps.shape[1:3]) == tuple(size):
        return maps
    if mode == "zoom":
        return zoom_maps(maps, size)
    if mode == "bilinear":
        resized = tf.image.resize(maps[..., None], size, method="bilinear")
        return resized.numpy()[..., 0].astype(np.float32)
    raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={mode!r}")


# Output samples per chunk of `zoom_maps`: bounds its float64 temporaries to a few MB.
_ZOOM_CHUNK = 1 << 18


@functools.lru_cache(maxsize=128)
def _zoom_axis(size_in: int, size_out: int, mode: str) -> tuple[np.ndarray, ...]:
    """Along one axis of ``scipy.ndimage.zoom(order=1, grid_mode=False)``: for each output
    sample, its two input neighbours and their weights, as scipy's C code computes them.

    The output sample o sits at ``c = o * ((n - 1) / (N - 1))`` in the input; with
    ``t = c - floor(c)`` the weights are ``w0 = 1 - t`` and ``w1 = 1 - w0`` (scipy's, not
    ``t``: they differ in the last bit). A neighbour beyond the edge is the edge sample in
    "nearest" mode; in "constant" mode a sample whose c lies beyond the last input sample (a
    rounding artefact of the last one) is 0 (cval), and a neighbour beyond the edge only ever
    gets weight 0.
    """
    step = (size_in - 1) / (size_out - 1) if size_out > 1 else 1.0
    coordinate = np.arange(size_out, dtype=np.float64) * step
    start = np.floor(coordinate)
    w0 = 1.0 - (coordinate - start)
    w1 = 1.0 - w0
    if mode == "constant":
        outside = coordinate > size_in - 1
        w0, w1 = np.where(outside, 0.0, w0), np.where(outside, 0.0, w1)
    elif mode != "nearest":
        raise ValueError(f"mode must be 'constant' or 'nearest'. Received: mode={mode!r}")
    first = np.clip(start.astype(np.intp), 0, size_in - 1)
    second = np.clip(first + 1, 0, size_in - 1)
    arrays = (first, second, w0, w1)
    for array in arrays:
        array.setflags(write=False)
    return arrays


def zoom_maps(maps, size: tuple[int, int], mode: str = "constant") -> np.ndarray:
    """``scipy.ndimage.zoom(maps, (1, H/h, W/w), order=1, mode=mode)``, bit for bit, batched.

    Order-1 zoom is separable: each output pixel mixes 2 x 2 input pixels with per-row and
    per-column weights (see `_zoom_axis`). scipy loops over output pixels in C with generic
    spline code; here the same float64 products ``(value * w_row) * w_col`` are summed over the
    four neighbours in scipy's order (row-major) with whole-array NumPy operations, and rounded
    to float32 once, as scipy does, so the result is identical, not merely close.

    Args:
        maps: array (batch, h, w).
        size: (H, W) wanted; as in scipy, the output has ``round(h * (H / h))`` rows (= H).
        mode: "constant" (scipy's default, used for maps) or "nearest" (Score-CAM's masks).

    Returns:
        float32 array (batch, H, W).
    """
    maps = np.asarray(maps, np.float32)
    batch, height, width = maps.shape
    out_h = int(round(height * (size[0] / height)))
    out_w = int(round(width * (size[1] / width)))
    rows, cols = _zoom_axis(height, out_h, mode), _zoom_axis(width, out_w, mode)
    result = np.empty((batch, out_h, out_w), np.float32)
    chunk = max(1, _ZOOM_CHUNK // (out_h * out_w))
    for start in range(0, batch, chunk):
        values = maps[start : start + chunk].astype(np.float64)
        total = None
        for row_index, row_weight in ((rows[0], rows[2]), (rows[1], rows[3])):
            weighted = values[:, row_index, :] * row_weight[:, None]
            for col_index, col_weight in ((cols[0], cols[2]), (cols[1], cols[3])):
                term = weighted[:, :, col_index] * col_weight
                if total is None:
                    total = term
                else:
                    total += term
        result[start : start + chunk] = total
    return result


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
        compiled: run the model passes of the CAM methods as TensorFlow graphs (`tf.function`,
            traced once per kind of call and cached on the explainer; the default) or eagerly,
            layer by layer (slower; for debugging, or for layers that cannot be traced).
            Saliency and SmoothGrad replay eagerly.

    Raises:
        ValueError: for a subclassed or unbuilt model, several inputs, a non-image input or an
            unknown `score_on`.
    """

    def __init__(self, model: keras.Model, *, score_on: str = "logits", compiled: bool = True):
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
        self.compiled = bool(compiled)
        # Traced graphs, by what they compute. Every one has an input signature with a free
        # batch axis, so it is traced once, whatever the batch sizes: calls in a loop reuse it.
        self._functions: dict[tuple, Callable] = {}

    @property
    def trace_count(self) -> int:
        """How many times this explainer has traced a graph (0 when eager).

        One trace per distinct kind of call (outputs, layers, and whether each output's classes
        are given or predicted); repeated calls, any batch size, add none.
        """
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

    def _image_spec(self) -> tf.TensorSpec:
        """The input signature of the model's images, with a free batch axis."""
        return tf.TensorSpec((None, *self._input_shape[1:]), self._input_dtype)

    def _function(self, key: tuple, build: Callable, signature: Sequence[tf.TensorSpec]):
        """The cached `tf.function` of `key`, made by ``tf.function(build(), ...)`` once."""
        if key not in self._functions:
            # No AutoGraph: the replay has no data-dependent Python control flow to convert.
            # The partial: TensorFlow warns about "frequent retracing" per code object, which
            # every closure made by `build` shares; each of these graphs is traced only once.
            self._functions[key] = tf.function(
                functools.partial(build()), input_signature=list(signature), autograph=False
            )
        return self._functions[key]

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

    def _scored(self, position: int, images) -> tf.Tensor:
        """The scored tensor (logits or probabilities) of output `position` for `images`; only
        the layers that output needs are run."""
        scorer = self._scorer(position)
        images = tf.convert_to_tensor(images, self._input_dtype)

        def scored(x):
            values, _ = self._graph.run([x], [scorer.tensor])
            return scorer.transform(values[scorer.tensor])

        if not self.compiled:
            return scored(images)
        function = self._function(("scored", position), lambda: scored, [self._image_spec()])
        return function(images)

    def _score_groups(self, position: int, target: Target, images, batch: int) -> tf.Tensor:
        """Target scores (groups, batch) of perturbed copies of the batch, group-major."""
        return group_scores(target, self._scored(position, images), batch)


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

    The forward and backward passes run as one TensorFlow graph (when `compiled`, the default),
    traced on the first call of each kind (outputs, layers, and for each output whether its
    classes are given or predicted) and reused for any batch size; the hooks run eagerly on
    its results (they are small, and may use NumPy). Callable targets run eagerly: a callable
    may keep Python state, which a traced graph would not update.

    Args:
        model: a functional or Sequential Keras 3 model with one image input; nested models are
            opened up, and the model is never modified.
        score_on: "logits" (default) or "probabilities" (see `Explainer`).
        compiled: trace the passes into graphs (default) or run them eagerly (see `Explainer`).
    """

    needs_gradients = True

    def __init__(self, model: keras.Model, *, score_on: str = "logits", compiled: bool = True):
        super().__init__(model, score_on=score_on, compiled=compiled)
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
        contexts = self._compiled_forward(x, plan, specs)
        if contexts is None:
            contexts = self._forward(x, plan, specs)
        maps = []
        for ctx in contexts:
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

    def _forward(
        self, x: tf.Tensor, plan: _Plan, specs: list, resolve=resolve_target
    ) -> list[CamContext]:
        """One forward pass (and the backward passes of `plan`) for all explained outputs.

        Runs eagerly, or inside a caller's `tf.function` when every target is a callable
        (`resolve_target` reads class ids and predicted classes with NumPy).
        """
        return [
            self._context(x, plan, index, *result)
            for index, result in enumerate(self._passes(x, plan, specs, resolve))
        ]

    def _compiled_forward(self, x: tf.Tensor, plan: _Plan, specs: list) -> list | None:
        """`_forward` through the cached graph of this plan and kind of targets, or None when
        it does not apply (an eager explainer, a callable target, an unknown class count)."""
        if not self.compiled or any(callable(spec) for spec in specs):
            return None
        batch = x.shape[0]
        given = []
        for spec, position in zip(specs, plan.positions):
            scorer = self._scorer(position)
            if spec is None:
                given.append(None)  # the predicted class, taken inside the graph
            elif scorer.num_classes is None:
                return None
            else:
                given.append(class_ids(spec, batch, scorer.num_classes, scorer.name))
        predicted = tuple(ids is None for ids in given)

        def build():
            def one_pass(images, *ids):
                ids = iter(ids)
                specs = [None if p else next(ids) for p in predicted]
                results = self._passes(images, plan, specs, _graph_target)
                return [(a, g, s, t.class_ids) for a, g, s, t in results]

            return one_pass

        signature = [self._image_spec()] + [tf.TensorSpec((None,), tf.int64)] * (
            len(predicted) - sum(predicted)
        )
        function = self._function(("cam", plan.positions, plan.layers, predicted), build, signature)
        results = function(x, *[tf.constant(ids) for ids in given if ids is not None])
        return [
            self._context(x, plan, index, acts, grads, scores, Target(ids.numpy()))
            for index, (acts, grads, scores, ids) in enumerate(results)
        ]

    def _passes(self, x: tf.Tensor, plan: _Plan, specs: list, resolve) -> list[tuple]:
        """(activations, gradients or None, scores, target) per explained output, from one
        forward pass and the backward passes of `plan`; `resolve(spec, scored, name)` turns a
        target spec into a `Target`."""
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
            targets, scores = [], []
            for spec, scorer in zip(specs, scorers):
                scored = scorer.transform(values[scorer.tensor])
                targets.append(resolve(spec, scored, scorer.name))
                scores.append(targets[-1].scores(scored))
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
        return [
            (tf.cast(values[layer], tf.float32), gradients[i], scores[i], targets[i])
            for i, layer in enumerate(plan.layers)
        ]

    def _context(self, x, plan: _Plan, index: int, activations, gradients, scores, target):
        position, batch = plan.positions[index], x.shape[0]
        return CamContext(
            activations=activations,
            gradients=gradients,
            scores=scores,
            images=x,
            target=target,
            layer=self._graph.tensor_name(plan.layers[index]),
            output=self._scorer(position).name,
            score=lambda images: self._score_groups(position, target, images, batch),
        )


def _graph_target(spec, scored: tf.Tensor, name: str) -> Target:
    """`resolve_target` inside a traced pass: the spec is None (the predicted classes) or a
    tensor of class ids already checked by `class_ids`."""
    del name
    return Target(predicted_classes(scored) if spec is None else spec)
