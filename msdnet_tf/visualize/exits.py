"""Grad-CAM maps of a model's exits: which exits and target layers, and the maps themselves.

Target layers (`LAYER_CHOICES`): "auto" (the default) is gradcam_tf's automatic rule, the last
layer on each output's path whose map keeps at least 7 cells a side (`gradcam_tf.layers`): on
an MSD-Net the block features each head reads (``exit{k}_features``, 8x8 at 32 pixels, 7x7 at
224), the layer that localizes (benchmarks/localization.py); "features" names those layers and
"conv_out" each head's last conv (``exit{k}_conv_out``, 2x2: a map that cannot localize, kept
for comparison). Any other Keras classifier is explained at the layers the automatic rule finds
for its outputs. Maps are resized to the image with half-pixel bilinear interpolation.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

import gradcam_tf
from msdnet_tf.model.builder import num_exits

__all__ = [
    "LAYER_CHOICES",
    "ExitMaps",
    "exit_numbers",
    "explain_exits",
    "is_msdnet",
    "layer_description",
]

LAYER_CHOICES = ("auto", "features", "conv_out")
_DESCRIPTIONS = {
    "auto": "the automatically chosen layer (the block features each head reads)",
    "features": "the block features each head reads",
    "conv_out": "each head's last conv",
}


@dataclasses.dataclass(frozen=True)
class ExitMaps:
    """Grad-CAM maps and probabilities of the chosen outputs for a batch of images.

    Attributes:
        maps: (K, N, H, W) maps in [0, 1].
        probs: (K, N, C) softmax probabilities.
        labels: short output labels ("B3", or the output name), K entries.
        layers: the target layers used, K entries.
    """

    maps: np.ndarray
    probs: np.ndarray
    labels: list[str]
    layers: list[str]

    @property
    def predicted(self) -> np.ndarray:
        """(K, N) top-1 class of every output and image."""
        return self.probs.argmax(axis=-1)


def layer_description(layer: str) -> str:
    """A caption's words for a `LAYER_CHOICES` entry ("the block features each head reads")."""
    if layer not in LAYER_CHOICES:
        raise ValueError(f"`layer` must be one of {LAYER_CHOICES}. Received: layer={layer!r}")
    return _DESCRIPTIONS[layer]


def is_msdnet(model: keras.Model) -> bool:
    """Whether `model` is an MSD-Net: outputs named ``exit{k}_logits`` and exit heads."""
    try:
        count = num_exits(model)
    except ValueError:
        return False
    return count == len(model.outputs) and any(x.name == "exit1_conv_out" for x in model.layers)


def exit_numbers(model: keras.Model, exits) -> list[int]:
    """The 1-based exits `exits` names (an int, a list, or None for all), checked.

    Raises:
        ValueError: an exit outside 1..K (K: the model's outputs) or an empty list.
    """
    count = len(model.outputs)
    if exits is None:
        return list(range(1, count + 1))
    numbers = [int(k) for k in ([exits] if isinstance(exits, int) else exits)]
    bad = [k for k in numbers if not 1 <= k <= count]
    if bad or not numbers:
        raise ValueError(
            f"Exits are numbered 1..{count} for this model. Received: exits={list(numbers)}"
        )
    return numbers


def explain_exits(
    model: keras.Model,
    images,
    exits=None,
    layer: str = "auto",
    classes=None,
    explainer: gradcam_tf.GradCAM | None = None,
) -> ExitMaps:
    """Grad-CAM of the chosen exits (any model: its chosen outputs) in one pass.

    Args:
        model: an MSD-Net (outputs ``exit{k}_logits``) or any Keras classifier.
        images: (N, H, W, C) model inputs.
        exits: 1-based exits (outputs) to explain; None for all.
        layer: 'auto' (default: gradcam_tf's automatic rule, on an MSD-Net the block features
            each head reads), 'features' (those, by name) or 'conv_out' (each head's last conv);
            for a model that is not an MSD-Net the layer is always found automatically.
        classes: None (each exit's top-1 class) or (N,) class ids to explain at every exit.
        explainer: a `GradCAM` of `model` to reuse.

    Returns:
        An `ExitMaps`.
    """
    if layer not in LAYER_CHOICES:
        raise ValueError(f"`layer` must be one of {LAYER_CHOICES}. Received: layer={layer!r}")
    numbers = exit_numbers(model, exits)
    if is_msdnet(model):
        layers = "auto" if layer == "auto" else [f"exit{k}_{layer}" for k in numbers]
        labels = [f"B{k}" for k in numbers]
    else:
        layers = "auto"
        names = list(model.output_names)
        labels = [model.name if len(names) == 1 else names[k - 1] for k in numbers]
    explainer = explainer or gradcam_tf.GradCAM(model)
    outputs = [k - 1 for k in numbers]
    targets = None if classes is None else np.asarray(classes)  # the same ids at every exit
    maps, probs = explainer.explain_with_probabilities(images, targets, layers, outputs)
    used = layers if isinstance(layers, list) else [explainer.target_layers[k] for k in outputs]
    return ExitMaps(np.stack(maps), np.stack(probs), labels, list(used))
