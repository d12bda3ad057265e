"""Tiny named Keras models, the method lists and the shared fixtures of the gradcam_tf tests.

Every builder seeds Keras, names every layer, and returns a fresh functional model whose
outputs are logits unless said otherwise (they build in milliseconds). `ALL_METHODS` is the one
list of explainers every test loops over; `CAM_METHODS` and `GRADIENT_CAMS` are its subsets.
The fixtures (registered for every test module by ``pytest_plugins`` in conftest.py) give
session-wide models and image batches that no test modifies.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import randomize_batchnorm
from keras import layers

import gradcam_tf

SIZE = 16
NUM_CLASSES = 5

ALL_METHODS = [
    gradcam_tf.GradCAM,
    gradcam_tf.GradCAMPlusPlus,
    gradcam_tf.XGradCAM,
    gradcam_tf.LayerCAM,
    gradcam_tf.HiResCAM,
    gradcam_tf.ScoreCAM,
    gradcam_tf.Saliency,
    gradcam_tf.SmoothGrad,
]
CAM_METHODS = [m for m in ALL_METHODS if issubclass(m, gradcam_tf.BaseCAM)]
GRADIENT_CAMS = [m for m in CAM_METHODS if m.needs_gradients]


def method_id(method) -> str:
    """The test id of a method: its class name."""
    return method.__name__


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    """`tiny_cnn()`: one logits output, 5 classes."""
    return tiny_cnn()


@pytest.fixture(scope="session")
def tiny_images() -> np.ndarray:
    """`images(3)`."""
    return images(3)


@pytest.fixture(scope="session")
def pooled_model() -> keras.Model:
    """`pooled_cnn()`: one logits output, 3 classes, full-resolution convs."""
    return pooled_cnn()


@pytest.fixture(scope="session")
def multi_exit_model() -> keras.Model:
    """`multi_exit_cnn()`: three exits, 4 classes."""
    return multi_exit_cnn()


@pytest.fixture(scope="session")
def multi_exit_images() -> np.ndarray:
    """`images(4)`."""
    return images(4)


def images(batch: int = 3, size: int = SIZE, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random float32 images (batch, size, size, channels) in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((batch, size // 4, size // 4, channels))
    return np.kron(coarse, np.ones((1, 4, 4, 1))).astype(np.float32) + 0.1 * rng.random(
        (batch, size, size, channels)
    ).astype(np.float32)


def tiny_cnn(
    num_classes: int = NUM_CLASSES,
    size: int = SIZE,
    final_activation: str | None = None,
    separate_activation: bool = False,
    seed: int = 0,
) -> keras.Model:
    """conv1 (8, 16x16) -> conv2 (8, stride 2, 8x8) -> GAP -> Dense `logits`.

    Args:
        final_activation: None for logits, or "softmax"/"sigmoid" inside the Dense layer (or in
            a separate Activation layer `probs` when `separate_activation`).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if final_activation is None or separate_activation:
        x = layers.Dense(num_classes, name="logits")(x)
        if final_activation is not None:
            x = layers.Activation(final_activation, name="probs")(x)
    else:
        x = layers.Dense(num_classes, activation=final_activation, name="probs")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def pooled_cnn(num_classes: int = 3, size: int = SIZE, seed: int = 0) -> keras.Model:
    """conv1 (8, 16x16) -> conv2 (8, 16x16) -> GAP `pool` -> Dense `logits`: no stride, for
    activation maximisation and the randomisation check."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="pooled_cnn")


def multi_exit_cnn(num_classes: int = 4, size: int = SIZE, seed: int = 0) -> keras.Model:
    """Three exits that mimic MSD-Net's naming; later blocks reuse earlier features.

    block1 (16x16) -> block2 (8x8) -> block3 (4x4, reads block2 and a pooled block1). Exit k
    reads `exit{k}_features` (an Identity on `block{k}_out`, which later blocks also read), has
    its own conv head ending in the Identity `exit{k}_conv_out`, then GAP and Dense
    `exit{k}_logits`.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    b1 = layers.Conv2D(6, 3, padding="same", activation="relu", name="block1_conv")(inputs)
    b1 = layers.Identity(name="block1_out")(b1)
    b2 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="block2_conv")(b1)
    b2 = layers.Identity(name="block2_out")(b2)
    pooled = layers.AveragePooling2D(4, name="block3_pool1")(b1)
    b3_in = layers.Concatenate(name="block3_concat")(
        [layers.AveragePooling2D(2, name="block3_pool2")(b2), pooled]
    )
    b3 = layers.Conv2D(8, 3, padding="same", activation="relu", name="block3_conv")(b3_in)
    b3 = layers.Identity(name="block3_out")(b3)
    outputs = []
    for k, block in enumerate([b1, b2, b3], start=1):
        x = layers.Identity(name=f"exit{k}_features")(block)
        x = layers.Conv2D(6, 3, padding="same", name=f"exit{k}_conv1")(x)
        x = layers.BatchNormalization(name=f"exit{k}_bn1")(x)
        x = layers.ReLU(name=f"exit{k}_relu1")(x)
        x = layers.Identity(name=f"exit{k}_conv_out")(x)
        x = layers.GlobalAveragePooling2D(name=f"exit{k}_pool")(x)
        outputs.append(layers.Dense(num_classes, name=f"exit{k}_logits")(x))
    model = keras.Model(inputs, outputs, name="multi_exit_cnn")
    randomize_batchnorm(model, seed)  # inference-mode BatchNorm is not the identity
    return model


def shared_tail_cnn(num_classes: int = 4, size: int = SIZE, seed: int = 0) -> keras.Model:
    """Two outputs whose gradients cannot be tapped apart: `head_a` logits, and an `ensemble`
    output computed from `head_a`'s pooled features and a second branch."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    y = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    pooled = layers.GlobalAveragePooling2D(name="gap")(y)
    head_a = layers.Dense(num_classes, name="head_a")(pooled)
    other = layers.Dense(num_classes, name="other")(layers.GlobalAveragePooling2D(name="gap_x")(x))
    ensemble = layers.Average(name="ensemble")([head_a, other])
    return keras.Model(inputs, [head_a, ensemble], name="shared_tail_cnn")


def nested_backbone_model(
    size: int = SIZE, num_classes: int = NUM_CLASSES, sequential: bool = False, seed: int = 0
) -> keras.Model:
    """A functional `backbone` (conv1, conv2) used as a layer after a Rescaling layer.

    With `sequential`, the whole thing is Sequential([Rescaling, backbone (Sequential), GAP,
    Dense]) instead.
    """
    keras.utils.set_random_seed(seed)
    if sequential:
        backbone = keras.Sequential(
            [
                keras.Input((size, size, 3)),
                layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2"),
            ],
            name="backbone",
        )
        return keras.Sequential(
            [
                keras.Input((size, size, 3), name="image"),
                layers.Rescaling(2.0, offset=-1.0, name="rescale"),
                backbone,
                layers.GlobalAveragePooling2D(name="gap"),
                layers.Dense(num_classes, name="logits"),
            ],
            name="nested_sequential",
        )
    inner_in = keras.Input((size, size, 3), name="backbone_in")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inner_in)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="nested_functional")


def flat_twin_of_nested(nested: keras.Model) -> keras.Model:
    """The functional nested model rebuilt flat, with the same weights (an oracle for tests)."""
    size = nested.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(nested.output_shape[-1], name="logits")(x)
    flat = keras.Model(inputs, outputs, name="flat_twin")
    backbone = nested.get_layer("backbone")
    for name in ("conv1", "conv2"):
        flat.get_layer(name).set_weights(backbone.get_layer(name).get_weights())
    flat.get_layer("logits").set_weights(nested.get_layer("logits").get_weights())
    return flat


def exotic_convs_model(last: str, size: int = SIZE, seed: int = 0) -> keras.Model:
    """conv1 -> a last spatial layer of kind `last` -> GAP -> Dense.

    `last`: "separable", "depthwise", "transpose" (each named `last_conv`) or "bn_relu" (a
    Conv2D `last_conv` then BatchNormalization and ReLU `last_relu`).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    if last == "separable":
        x = layers.SeparableConv2D(6, 3, padding="same", name="last_conv")(x)
    elif last == "depthwise":
        x = layers.DepthwiseConv2D(3, padding="same", name="last_conv")(x)
    elif last == "transpose":
        x = layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="last_conv")(x)
    elif last == "bn_relu":
        x = layers.Conv2D(6, 3, padding="same", name="last_conv")(x)
        x = layers.BatchNormalization(name="last_bn")(x)
        x = layers.ReLU(name="last_relu")(x)
    else:
        raise ValueError(f"unknown kind {last!r}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x), name=f"exotic_{last}")


def one_by_one_tail_model(size: int = SIZE, seed: int = 0) -> keras.Model:
    """conv (8x8) -> GAP kept 4-D (1x1) -> 1x1 conv -> Flatten: the 1x1 maps must be skipped."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = layers.Conv2D(3, 1, name="conv_logits")(x)
    return keras.Model(inputs, layers.Flatten(name="flatten")(x), name="one_by_one_tail")


def no_spatial_model(size: int = SIZE) -> keras.Model:
    """Flatten -> Dense: no spatial layer at all."""
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x), name="no_spatial")
