"""The machinery every explainer shares, and the base class of the CAM methods.

`Explainer` owns the input checks (`gradcam_tf.checks`), the flat replay of the model and the
choice of outputs and of what is scored on them (`gradcam_tf.outputs.ModelOutputs`, built once
per explainer), and the targets. `BaseCAM` adds target layers (resolved and planned once per
layer set, then cached), the gradient tape, ReLU, and the resize and normalisation of
`gradcam_tf.postprocess`; a CAM method overrides one hook, `channel_weights` (Grad-CAM-like
methods) or `compute_map` (pixel-wise methods). `BaseCAM.explain_with_probabilities` returns each
explained output's probabilities with the maps, read from the same forward pass.

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
hundred layers cost far more than the network's own compiled forward pass (see
benchmarks/RESULTS.md, `gradcam_throughput.py`). So (unless ``compiled=False``) the forward and
backward passes are traced once into a `tf.function` per kind of call (outputs, target layers,
and for each output whether its classes are given or predicted), with a free batch axis, and
cached on the explainer: a loop of calls traces nothing more (`Explainer.trace_count`) and the
model's variables are read live, so the graph follows training. Class ids are checked before the
graph runs; callable targets stay eager (they may keep Python state); the hooks run eagerly on
the graph's activations and gradients, so the compiled maps are those of the eager replay.
Score-CAM's masked forward passes are compiled per output the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.checks import check_images
from gradcam_tf.graph import Tap
from gradcam_tf.layers import RULES, auto_target, check_target_tensor, resolve_layer
from gradcam_tf.outputs import ModelOutputs, check_score_on
from gradcam_tf.postprocess import check_resize, finish_maps, finish_maps_tf
from gradcam_tf.targets import (
    Scorer,
    Target,
    class_ids,
    group_scores,
    predicted_classes,
    resolve_target,
    split_targets,
)

__all__ = ["BaseCAM", "CamContext", "Explainer"]

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
        self.score_on = check_score_on(score_on)
        # The explainer's own graph and traced functions (not the cache of
        # `gradcam_tf.outputs.model_outputs`), so that `trace_count` counts its own traces.
        self._outputs = ModelOutputs(model)
        self._graph = self._outputs.graph
        self.model = model
        self.compiled = bool(compiled)

    @property
    def trace_count(self) -> int:
        """How many times this explainer has traced a graph (0 when eager).

        One trace per distinct kind of call (outputs, layers, and whether each output's classes
        are given or predicted); repeated calls, any batch size, add none.
        """
        return self._outputs.trace_count

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in output order."""
        return self._outputs.output_names

    def output_positions(self, outputs=None) -> list[int]:
        """The positions of the outputs `outputs` chooses: None (all), an index, a name or a
        list of them (see `gradcam_tf.outputs`)."""
        return self._outputs.positions(outputs)

    # -- inputs and scores --------------------------------------------------------------------

    def _images(self, images) -> tf.Tensor:
        """Checks a batch of images against the model input; returns it as a tensor."""
        return check_images(images, self._outputs.input_shape, self._outputs.input_dtype)

    def _scorer(self, position: int) -> Scorer:
        return self._outputs.scorer(position, self.score_on)

    def _scored(self, position: int, images) -> tf.Tensor:
        """The scored tensor (logits or probabilities) of output `position` for `images`; only
        the layers that output needs are run."""
        images = tf.convert_to_tensor(images, self._outputs.input_dtype)
        if not self.compiled:
            return self._outputs.scores(images, position, self.score_on)
        return self._outputs.compiled_scores(position, self.score_on)(images)

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
        probabilities: the output's probabilities (batch, ..., classes) from the same forward
            pass (see `BaseCAM.explain_with_probabilities`).
    """

    activations: tf.Tensor
    gradients: tf.Tensor | None
    scores: tf.Tensor
    images: tf.Tensor
    target: Target
    layer: str
    output: str
    score: Callable[[tf.Tensor], tf.Tensor]
    probabilities: tf.Tensor


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

        The rule ("localize"): walking back from the output, the last layer whose map keeps at
        least ``gradcam_tf.layers.MIN_MAP_SIZE`` (7) cells a side, whatever its class; see
        `gradcam_tf.layers` (and ``layers="last_spatial"`` for the last map larger than 1x1).
        """
        graph = self._graph
        return [graph.tensor_name(auto_target(graph, k)) for k in range(len(graph.outputs))]

    def explain(
        self,
        images,
        targets=None,
        layers="auto",
        outputs=None,
        resize: str | None = "bilinear",
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
            layers: "auto" (for each output, the last layer on its path whose map keeps at
                least 7 cells a side: enough to localize; see `gradcam_tf.layers`),
                "last_spatial" (the last map larger than 1x1 before each output, the rule of
                tf-keras-vis and torch-cam), a layer name (also inside nested models:
                "backbone/conv2" or "conv2") or keras Layer used for every output, or a list
                with one name/Layer/"auto"/"last_spatial" per explained output.
            outputs: which outputs to explain: None (all), an index, a name, or a list (see
                `gradcam_tf.outputs`).
            resize: "bilinear" (the default: half-pixel-centred bilinear, as OpenCV's
                ``cv2.resize(INTER_LINEAR)`` and pytorch-grad-cam), "zoom" (tf-keras-vis'
                corner-aligned linear zoom, for parity with it) or None (feature-map
                resolution); see `gradcam_tf.postprocess.resize_maps`.
            normalize: scale each map to [0, 1] (per-sample min-max, epsilon 1e-7).

        Returns:
            One float32 array (batch, height, width) per explained output, in [0, 1] when
            normalized; (batch, h, w) at the layer's resolution when `resize` is None.

        Raises:
            ValueError: for images of the wrong rank, shape or dtype, targets of the wrong length
                or out of range, an unknown layer (with suggestions), a non-spatial layer, a
                layer that does not feed its output, or an output without a spatial layer.
        """
        return self._explain(images, targets, layers, outputs, resize, normalize)[0]

    def explain_with_probabilities(
        self,
        images,
        targets=None,
        layers="auto",
        outputs=None,
        resize: str | None = "bilinear",
        normalize: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Class activation maps and each explained output's probabilities, from one pass.

        The probabilities are read from the forward pass that gives the maps (no second pass):
        the output itself when it ends with a softmax or sigmoid, else the softmax of its logits
        (``score_on="probabilities"`` in `gradcam_tf.outputs`), whatever this explainer's own
        `score_on`. Compiled explainers trace this pass once per kind of call, and `explain`
        with the same arguments reuses the same graph.

        Args:
            images, targets, layers, outputs, resize, normalize: as `explain`.

        Returns:
            (maps, probabilities): per explained output, the maps of `explain` and a float32
            array (batch, ..., classes) of probabilities.

        Raises:
            ValueError: as `explain`.

        Example:
            >>> maps, probs = gradcam_tf.GradCAM(model).explain_with_probabilities(x, labels)
            >>> top3 = np.argsort(-probs[0], axis=-1)[:, :3]  # first output's top-3 classes
        """
        maps, contexts = self._explain(images, targets, layers, outputs, resize, normalize)
        return maps, [np.asarray(ctx.probabilities, np.float32) for ctx in contexts]

    def _explain(self, images, targets, layers, outputs, resize, normalize) -> tuple[list, list]:
        """The maps and the `CamContext` of each explained output."""
        x = self._images(images)
        check_resize(resize)
        plan = self._plan(self.output_positions(outputs), layers)
        specs = split_targets(targets, len(plan.positions))
        contexts = self._compiled_forward(x, plan, specs)
        if contexts is None:
            contexts = self._forward(x, plan, specs)
        size = tuple(x.shape[1:3])
        maps = [
            finish_maps(
                tf.nn.relu(tf.cast(self.compute_map(ctx), tf.float32)), size, resize, normalize
            )
            for ctx in contexts
        ]
        return maps, contexts

    def graph_explain(
        self,
        images: tf.Tensor,
        layers="auto",
        outputs=None,
        resize: str | None = "bilinear",
        normalize: bool = True,
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """`explain_with_probabilities` of each output's predicted class, in TensorFlow ops
        only, to be traced into a caller's `tf.function` (a serving signature, say).

        The same forward pass and backward passes as `explain` (one of each when the outputs'
        gradients tap apart, see the module docstring); the hook runs on the traced tensors, so
        it must be written with TensorFlow ops (every gradient method of gradcam_tf is), and the
        resize and normalisation are `gradcam_tf.postprocess.finish_maps_tf`. Inside a
        `tf.function` the model's variables are captured by reference: save them with it by
        tracking the model on the `tf.Module` that holds the function.

        Args:
            images: a float tensor (batch, height, width, channels), possibly symbolic, with
                the model's height, width and channels.
            layers, outputs: as `explain`.
            resize: "bilinear" (default) or None; "zoom" (NumPy) is not available in a graph.
            normalize: per-sample min-max scaling to [0, 1], as `explain`.

        Returns:
            (maps, probabilities): per explained output, a float32 tensor (batch, height,
            width) (at the layer's resolution when `resize` is None) and the output's
            probabilities (batch, ..., classes).

        Raises:
            ValueError: for resize="zoom", a gradient-free method, or as `explain`.
        """
        if resize == "zoom" or not self.needs_gradients:
            raise ValueError(
                "graph_explain traces gradient methods with resize='bilinear' or None. "
                f"Received: {type(self).__name__}, resize={resize!r}"
            )
        check_resize(resize)
        images = tf.cast(images, self._outputs.input_dtype)
        plan = self._plan(self.output_positions(outputs), layers)
        specs = [None] * len(plan.positions)
        results = self._passes(images, plan, specs, _graph_target)
        maps, probabilities = [], []
        for index, (acts, grads, scores, target, probs) in enumerate(results):
            ctx = self._context(images, plan, index, acts, grads, scores, target, probs)
            raw = tf.nn.relu(tf.cast(self.compute_map(ctx), tf.float32))
            maps.append(finish_maps_tf(raw, tuple(images.shape[1:3]), resize, normalize))
            probabilities.append(tf.cast(probs, tf.float32))
        return maps, probabilities

    def gradient_passes(self, layers="auto", outputs=None) -> int:
        """How many backward passes `explain` makes for these layers and outputs.

        1 when every output's gradient comes out of the shared pass (see the module docstring),
        plus one per output whose target layer also feeds another explained output through the
        same consumer; 0 for gradient-free methods. The forward pass is always one.
        """
        if not self.needs_gradients:
            return 0
        plan = self._plan(self.output_positions(outputs), layers)
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
            if spec is None or (isinstance(spec, str) and spec in ("auto", *RULES)):
                rule = RULES[0] if spec in (None, "auto") else spec
                tensor = auto_target(graph, position, rule)
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
                return [(a, g, s, t.class_ids, p) for a, g, s, t, p in results]

            return one_pass

        signature = [self._outputs.image_spec()] + [tf.TensorSpec((None,), tf.int64)] * (
            len(predicted) - sum(predicted)
        )
        key = ("cam", plan.positions, plan.layers, predicted)
        function = self._outputs.function(key, build, signature)
        results = function(x, *[tf.constant(ids) for ids in given if ids is not None])
        return [
            self._context(x, plan, index, acts, grads, scores, Target(ids.numpy()), probs)
            for index, (acts, grads, scores, ids, probs) in enumerate(results)
        ]

    def _passes(self, x: tf.Tensor, plan: _Plan, specs: list, resolve) -> list[tuple]:
        """(activations, gradients or None, scores, target, probabilities) per explained
        output, from one forward pass and the backward passes of `plan`;
        `resolve(spec, scored, name)` turns a target spec into a `Target`."""
        graph = self._graph
        scorers = [self._scorer(k) for k in plan.positions]
        readers = [self._outputs.scorer(k, "probabilities") for k in plan.positions]
        fetch = [*plan.layers, *(s.tensor for s in scorers), *(r.tensor for r in readers)]
        fetch = list(dict.fromkeys(fetch))
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
        probabilities = [r.transform(values[r.tensor]) for r in readers]
        return [
            (tf.cast(values[layer], tf.float32), gradients[i], scores[i], targets[i], probs)
            for i, (layer, probs) in enumerate(zip(plan.layers, probabilities))
        ]

    def _context(self, x, plan: _Plan, index, activations, gradients, scores, target, probs):
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
            probabilities=probs,
        )


def _graph_target(spec, scored: tf.Tensor, name: str) -> Target:
    """`resolve_target` inside a traced pass: the spec is None (the predicted classes) or a
    tensor of class ids already checked by `class_ids`."""
    del name
    return Target(predicted_classes(scored) if spec is None else spec)
