"""Explanations served beside the answer: every exit's probabilities and its Grad-CAM map, from
one compiled call.

`explain_signature(model)` is a `tf.function` with a fixed input signature, images
(batch, height, width, channels) float32 as the model takes them (normalised), returning a dict:

- ``probabilities``: (K, batch, classes), the softmax of each exit's logits;
- ``classes``: (K, batch) int64, each exit's top-1 class (the class its map explains);
- ``maps``: (K, batch, height, width) float32 in [0, 1], each exit's Grad-CAM of its own top-1
  class at the default target layer (``layers="auto"``: on MSD-Net ``exit{k}_features``, see
  `gradcam_tf.layers`), resized to the input with half-pixel bilinear interpolation and min-max
  normalised per image: exactly ``gradcam_tf.GradCAM(model).explain(images)`` (same layer, same
  resize), within float32 rounding.

One forward pass over every exit and one backward pass for all of them
(`gradcam_tf.BaseCAM.graph_explain`: the gradient of the summed exit scores is read at zero
"taps" added on the edges into each exit's own head, so exit k's map carries exit k's gradient
only); the probabilities come from the same forward pass. Its cost relative to the plain forward
pass is measured by benchmarks/explain_serving.py (benchmarks/RESULTS.md).

Saving: the function reads the model's variables by reference, so the `tf.Module` holding it
must track the model. `explain_module(model)` is such a module; or, on any module::

    module.model = model                     # tracks the variables
    module.explain = explain_signature(model)
    tf.saved_model.save(module, path, signatures={"explain": module.explain})

The reloaded SavedModel needs TensorFlow only (no msdnet_tf, no gradcam_tf):
``tf.saved_model.load(path).signatures["explain"](images=x)`` returns the same dict.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import gradcam_tf

__all__ = ["explain_module", "explain_signature"]


def explain_signature(
    model: keras.Model, layers="auto", batch_size: int | None = None
) -> tf.types.experimental.PolymorphicFunction:
    """A `tf.function` giving every output's probabilities, top-1 classes and Grad-CAM maps.

    Args:
        model: a functional Keras classifier with one image input, logits or probabilities
            outputs (an MSD-Net: one per exit).
        layers: the target layers, as `gradcam_tf.GradCAM.explain`: "auto" (default), one name
            for all outputs, or one per output.
        batch_size: a fixed batch size for the signature, or None (any).

    Returns:
        A `tf.function` with input signature ``[TensorSpec((batch_size, H, W, C), float32,
        name="images")]`` returning ``{"probabilities": (K, B, classes), "classes": (K, B)
        int64, "maps": (K, B, H, W)}`` (see the module docstring).

    Raises:
        ValueError: for a model without a spatial layer before an output, or bad `layers`.

    Example:
        >>> explain = explain_signature(model)
        >>> out = explain(tf.constant(normalized_images))
        >>> out["maps"][-1]  # the last exit's maps, (batch, height, width)
    """
    explainer = gradcam_tf.GradCAM(model)
    explainer.gradient_passes(layers=layers)  # checks the layers now, before any trace
    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def explain(images):
        maps, probabilities = explainer.graph_explain(images, layers=layers)
        stacked = tf.stack(probabilities)
        return {
            "probabilities": stacked,
            "classes": tf.argmax(stacked, axis=-1, output_type=tf.int64),
            "maps": tf.stack(maps),
        }

    return explain


def explain_module(model: keras.Model, layers="auto", batch_size: int | None = None) -> tf.Module:
    """A `tf.Module` tracking `model` with `explain_signature(model, ...)` as ``explain``.

    Save it with ``tf.saved_model.save(module, path, signatures={"explain": module.explain})``.
    """
    module = tf.Module()
    module.model = model
    module.explain = explain_signature(model, layers, batch_size)
    return module
