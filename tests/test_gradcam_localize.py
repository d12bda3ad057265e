"""Defaults that localize: the automatic layer keeps a map of at least 7x7 (`MIN_MAP_SIZE`),
the last-spatial rule stays available by name, the default resize is half-pixel bilinear, and
every MSD-Net preset gets a localizing layer for every exit at its own input size."""

import cv2
import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from keras import layers

import gradcam_tf
from gradcam_tf.layers import MIN_MAP_SIZE, RULES


def _pyramid(size: int = 32, pad: bool = False) -> keras.Model:
    """conv at size, then conv+pool stages halving the map down to 2x2, GAP, Dense."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name=f"conv{size}")(inputs)
    side = size
    while side > 2:
        if pad and side == 8:
            x = layers.ZeroPadding2D(1, name="pad")(x)  # 10x10, then a valid strided conv
            x = layers.Conv2D(4, 3, strides=2, activation="relu", name="conv4")(x)
            side = 4
            continue
        x = layers.MaxPooling2D(2, name=f"pool{side // 2}")(x)
        side //= 2
        x = layers.Conv2D(4, 3, padding="same", activation="relu", name=f"conv{side}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def test_the_rule_takes_the_last_map_of_at_least_min_size_a_side():
    model = _pyramid(32)
    assert MIN_MAP_SIZE == 7 and RULES == ("localize", "last_spatial")
    assert gradcam_tf.find_target_layers(model) == ["conv8"]
    assert gradcam_tf.find_target_layers(model, min_size=4) == ["conv4"]
    assert gradcam_tf.find_target_layers(model, min_size=16) == ["conv16"]
    assert gradcam_tf.find_target_layers(model, "last_spatial") == ["conv2"]
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["conv8"]
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    (auto,) = cam.explain(images, resize=None)
    (last,) = cam.explain(images, layers="last_spatial", resize=None)
    assert auto.shape == (2, 8, 8) and last.shape == (2, 2, 2)
    np.testing.assert_array_equal(auto, cam.explain(images, layers="conv8", resize=None)[0])
    np.testing.assert_array_equal(last, cam.explain(images, layers="conv2", resize=None)[0])


def test_small_inputs_fall_back_to_the_largest_map_and_padding_is_walked_through():
    assert gradcam_tf.find_target_layers(_pyramid(8)) == ["conv8"]  # 8 >= 7 still
    assert gradcam_tf.find_target_layers(_pyramid(4)) == ["conv4"]  # nothing reaches 7: largest
    # conv8 -> pad (10x10, shifted off the image grid) -> conv4: the pad is not a target.
    padded = _pyramid(32, pad=True)
    assert gradcam_tf.find_target_layers(padded) == ["conv8"]
    assert gradcam_tf.find_target_layers(padded, "last_spatial") == ["conv2"]


@pytest.mark.parametrize(
    "rule, min_size, message",
    [("nearest", 7, "`rule` must be one of"), ("localize", 1, "`min_size` must be an int >= 2")],
)
def test_bad_rule_or_min_size(rule, min_size, message):
    with pytest.raises(ValueError, match=message):
        gradcam_tf.find_target_layers(_pyramid(8), rule, min_size)


def test_default_resize_is_half_pixel_bilinear_as_opencv_and_zoom_stays_available():
    maps = np.random.default_rng(1).random((3, 2, 2)).astype(np.float32)
    got = gradcam_tf.resize_maps(maps, (32, 32))
    expected = np.stack([cv2.resize(m, (32, 32), interpolation=cv2.INTER_LINEAR) for m in maps])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    zoom = gradcam_tf.resize_maps(maps, (32, 32), "zoom")
    np.testing.assert_array_equal(zoom, scipy.ndimage.zoom(maps, (1, 16, 16), order=1))


def test_a_2x2_map_peaks_over_its_cell_not_on_the_image_corner():
    """The corner-aligned zoom puts cell (0, 0) on pixel (0, 0) and always peaks on a corner;
    half-pixel bilinear keeps the whole top-left quarter at the peak value."""
    maps = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)
    bilinear = gradcam_tf.resize_maps(maps, (32, 32))[0]
    zoom = gradcam_tf.resize_maps(maps, (32, 32), "zoom")[0]
    assert zoom[0, 0] == 1.0 and (zoom[1:, 1:] < 1.0).all()
    assert (bilinear[:8, :8] == 1.0).all() and bilinear[8:, 8:].max() < 1.0
    assert bilinear[4, 4] > zoom[4, 4]


def test_explain_default_resize_is_bilinear():
    model = _pyramid(32)
    images = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    cam = gradcam_tf.GradCAM(model)
    (raw,) = cam.explain(images, resize=None, normalize=False)
    (default,) = cam.explain(images)
    np.testing.assert_allclose(
        default, gradcam_tf.normalize_maps(gradcam_tf.resize_maps(raw, (32, 32))), atol=1e-6
    )
    (zoom,) = cam.explain(images, resize="zoom")
    assert np.abs(zoom - default).max() > 1e-2


# Every preset at its own input size: the automatic layer of exit k is exit{k}_features (8x8
# at 32 pixels, 7x7 at 224; the heads' last convs are 2x2). Narrow twins (same scales and
# strides, few channels) keep the default suite fast; the full presets are in the slow suite.
NARROW = dict(n_channels=4, growth_rate=2)
# Input side -> the map of exit{k}_features: 32 px (3 scales, /4), 16 px (`testing`, 2
# scales, /2), 224 px (ImageNet stem /4 and 3 more scales, /32).
FEATURE_SIDE = {32: (8, 8), 16: (8, 8), 224: (7, 7)}


def _check_preset(name: str, **overrides) -> None:
    from msdnet_tf.model import presets

    model = presets.build_preset(name, **overrides)
    exits = len(model.outputs)
    chosen = gradcam_tf.find_target_layers(model)
    assert chosen == [f"exit{k}_features" for k in range(1, exits + 1)]
    side = model.input_shape[1]
    for name_k in chosen:
        height, width = model.get_layer(name_k).output.shape[1:3]
        assert min(height, width) >= MIN_MAP_SIZE and (height, width) == FEATURE_SIDE[side]
    last = gradcam_tf.find_target_layers(model, "last_spatial")
    assert last == [f"exit{k}_conv_out" for k in range(1, exits + 1)]


@pytest.mark.parametrize("name", ["digits", "testing", "cifar10_anytime"])
def test_every_exit_of_the_small_presets_gets_its_block_features(name):
    _check_preset(name)


@pytest.mark.parametrize("name", ["imagenet_step4", "imagenet_step7", "cifar10_b10"])
def test_narrow_twins_of_the_large_presets_get_their_block_features(name):
    _check_preset(name, **NARROW)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "cifar10_anytime",
        "cifar100_anytime",
        "cifar10_budgeted",
        "cifar100_budgeted",
        "cifar10_b10",
        "imagenet_step4",
        "imagenet_step7",
        "digits",
        "testing",
    ],
)
def test_every_preset_at_full_width(name):
    from msdnet_tf.model import presets

    assert name in presets.PRESETS
    _check_preset(name)


def test_graph_explain_traces_the_same_maps_and_probabilities(multi_exit_model, multi_exit_images):
    cam = gradcam_tf.GradCAM(multi_exit_model)
    traced = tf.function(lambda x: cam.graph_explain(x))
    maps, probs = traced(tf.constant(multi_exit_images))
    expected_maps, expected_probs = cam.explain_with_probabilities(multi_exit_images)
    for got, want in zip(maps, expected_maps):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    for got, want in zip(probs, expected_probs):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    raw, _ = cam.graph_explain(tf.constant(multi_exit_images), resize=None, normalize=False)
    eager = cam.explain(multi_exit_images, resize=None, normalize=False)
    for got, want in zip(raw, eager):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="graph_explain traces gradient methods"):
        cam.graph_explain(tf.constant(multi_exit_images), resize="zoom")
    with pytest.raises(ValueError, match="graph_explain traces gradient methods"):
        gradcam_tf.ScoreCAM(multi_exit_model).graph_explain(tf.constant(multi_exit_images))
