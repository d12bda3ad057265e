"""Which outputs of a model are explained or scored, and what is scored on each.

One resolver for every public function of gradcam_tf (the CAM methods, saliency, the metrics and
activation maximisation), so that they all take the same two arguments the same way:

* ``outputs``: None (every output; a function that scores one output accepts None only for a
  single-output model, so that an explanation of a multi-exit network never silently picks an
  exit), an output position (negative positions count from the end), an output name
  (``"exit3_logits"``), or a list of distinct positions and names.
* ``score_on``: "logits", the pre-softmax/-sigmoid scores, read from the model's graph without
  touching its layers (see `gradcam_tf.targets.make_scorer`); or "probabilities", the output
  itself when it ends with a softmax or sigmoid, else the softmax of the logits (the sigmoid for
  a single unit).

`ModelOutputs` holds a model's flat graph (`gradcam_tf.graph.FlatGraph`) and reads any output
as logits or probabilities, eagerly or through `tf.function`s traced once per kind of call and
cached; `model_outputs` keeps one per model while the model lives, so that functions called
batch after batch in a loop (the metrics) trace the model once.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.graph import FlatGraph
from gradcam_tf.targets import Scorer, make_scorer

__all__ = [
    "SCORE_ON",
    "ModelOutputs",
    "check_score_on",
    "model_outputs",
    "resolve_output",
    "resolve_outputs",
]

SCORE_ON = ("logits", "probabilities")


def check_score_on(score_on: str) -> str:
    """Checks `score_on`: one of `SCORE_ON`.

    Raises:
        ValueError: ``"`score_on` must be one of ('logits', 'probabilities'). Received: ..."``.
    """
    if not isinstance(score_on, str) or score_on not in SCORE_ON:
        raise ValueError(f"`score_on` must be one of {SCORE_ON}. Received: score_on={score_on!r}")
    return score_on


def resolve_outputs(names: Sequence[str], outputs) -> list[int]:
    """Output positions from `outputs`: None (all), a position, a name, or a list of them.

    Args:
        names: the model's output names, in output order.
        outputs: what the caller passed (see the module docstring).

    Returns:
        Distinct positions in ``range(len(names))``, in the order given.

    Raises:
        ValueError: for a position out of range, an unknown name, another type, an empty list or
            a repeated output.
    """
    names, count = list(names), len(names)
    if outputs is None:
        return list(range(count))
    items = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
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


def resolve_output(names: Sequence[str], outputs) -> int:
    """The one output position chosen by `outputs`, for functions that score a single output.

    As `resolve_outputs`, and the choice must be exactly one output: None only for a
    single-output model, a list only of length one.

    Raises:
        ValueError: as `resolve_outputs`, or when several outputs are chosen.
    """
    positions = resolve_outputs(names, outputs)
    if len(positions) != 1:
        raise ValueError(
            f"`outputs` must choose one output of the model's {len(names)} ({list(names)}), by "
            f"index or name. Received: outputs={outputs!r}"
        )
    return positions[0]


class ModelOutputs:
    """A model's flat graph, and how each of its outputs is read as logits or probabilities.

    Args:
        model: a functional or Sequential Keras 3 model with one image input (batch, height,
            width, channels); nested models are opened up. The model is never modified.

    Attributes:
        graph: the model's `FlatGraph`.
        input_shape: the image input's shape, batch axis first (None where free).
        input_dtype: the image input's dtype name.

    Raises:
        ValueError: for a subclassed or unbuilt model, several inputs or a non-image input.
    """

    def __init__(self, model: keras.Model):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`model` must be a keras.Model. Received: model of type {type(model).__name__}"
            )
        self.graph = FlatGraph(model)
        if len(self.graph.inputs) != 1:
            raise ValueError(
                f"gradcam_tf explains models with one image input. Received: a model with "
                f"{len(self.graph.inputs)} inputs"
            )
        info = self.graph.tensors[self.graph.inputs[0]]
        if len(info.shape) != 4:
            raise ValueError(
                f"gradcam_tf explains image models with a 4-D input (batch, height, width, "
                f"channels). Received: a model input of shape {info.shape}"
            )
        self.input_shape, self.input_dtype = tuple(info.shape), info.dtype
        self._scorers: dict[tuple[int, str], Scorer] = {}
        # Traced graphs, by what they compute. Every one has an input signature with a free
        # batch axis, so it is traced once, whatever the batch sizes: calls in a loop reuse it.
        self.functions: dict[tuple, Callable] = {}

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in output order."""
        return list(self.graph.output_names)

    def positions(self, outputs) -> list[int]:
        """`resolve_outputs` on this model's outputs."""
        return resolve_outputs(self.graph.output_names, outputs)

    def position(self, outputs) -> int:
        """`resolve_output` on this model's outputs."""
        return resolve_output(self.graph.output_names, outputs)

    def output_shape(self, position: int) -> tuple:
        """The symbolic shape of output `position`, batch axis first."""
        return tuple(self.graph.tensors[self.graph.outputs[position]].shape)

    def scorer(self, position: int, score_on: str) -> Scorer:
        """How output `position` is read as `score_on` (cached).

        Raises:
            ValueError: for an unknown `score_on`, or logits hidden inside a layer that is not
                a Dense, EinsumDense or conv layer (see `gradcam_tf.targets.make_scorer`).
        """
        key = (position, check_score_on(score_on))
        if key not in self._scorers:
            self._scorers[key] = make_scorer(self.graph, position, score_on)
        return self._scorers[key]

    def image_spec(self) -> tf.TensorSpec:
        """The input signature of the model's images, with a free batch axis."""
        return tf.TensorSpec((None, *self.input_shape[1:]), self.input_dtype)

    def function(self, key: tuple, build: Callable, signature: Sequence[tf.TensorSpec]):
        """The cached `tf.function` of `key`, made by ``tf.function(build(), ...)`` once."""
        if key not in self.functions:
            # No AutoGraph: the replay has no data-dependent Python control flow to convert.
            # The partial: TensorFlow warns about "frequent retracing" per code object, which
            # every closure made by `build` shares; each of these graphs is traced only once.
            self.functions[key] = tf.function(
                functools.partial(build()), input_signature=list(signature), autograph=False
            )
        return self.functions[key]

    @property
    def trace_count(self) -> int:
        """How many times the cached functions have been traced."""
        return sum(f.experimental_get_tracing_count() for f in self.functions.values())

    def scores(self, images: tf.Tensor, position: int, score_on: str) -> tf.Tensor:
        """The scored tensor (float32 logits or probabilities) of output `position` for
        `images`, replaying only the layers that output needs. Runs eagerly, or inside a
        caller's `tf.function` or gradient tape."""
        scorer = self.scorer(position, score_on)
        values, _ = self.graph.run([images], [scorer.tensor])
        return scorer.transform(values[scorer.tensor])

    def compiled_scores(self, position: int, score_on: str) -> Callable[[tf.Tensor], tf.Tensor]:
        """`scores` of output `position` as a `tf.function` over image batches of any size,
        traced once and cached."""
        self.scorer(position, score_on)  # errors before tracing

        def build():
            def scores(images):
                return self.scores(images, position, score_on)

            return scores

        return self.function(("scores", position, score_on), build, [self.image_spec()])


# model -> ModelOutputs. Weak keys: a ModelOutputs holds the model's layers, never the model
# object, so an entry goes with its model.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_outputs(model: keras.Model) -> ModelOutputs:
    """The `ModelOutputs` of `model`, built once and kept while the model lives.

    Raises:
        ValueError: as `ModelOutputs`.
    """
    if model not in _CACHE:
        _CACHE[model] = ModelOutputs(model)
    return _CACHE[model]
