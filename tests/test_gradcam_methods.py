"""Oracles and limiting cases of the CAM and saliency methods, targets and post-processing."""

import gradcam_models
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import gradcam_tf

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


@pytest.fixture(scope="module")
def model():
    return gradcam_models.tiny_cnn()


@pytest.fixture(scope="module")
def images():
    return gradcam_models.images(3)


def _classic_cam(model, images, class_ids):
    """CAM (Zhou et al. 2016) of a conv -> GAP -> Dense head: ReLU(sum_k w_kc A_k)."""
    acts = keras.Model(model.inputs, model.get_layer("conv2").output)(images).numpy()
    kernel = model.get_layer("logits").get_weights()[0]  # (channels, classes)
    return np.maximum(np.einsum("bhwk,kb->bhw", acts, kernel[:, class_ids]), 0)


def test_grad_cam_on_a_gap_head_is_classic_cam(model, images):
    """Up to the scale 1/(h w) of the gradient of a mean (compared before normalisation: the
    min-max epsilon 1e-7 is not negligible next to the range of a small raw map)."""
    ids = [4, 0, 2]
    cam = gradcam_tf.GradCAM(model)
    (raw,) = cam.explain(images, targets=ids, resize=None, normalize=False)
    expected = _classic_cam(model, images, ids)
    assert (expected.max(axis=(1, 2)) > 0).all()
    np.testing.assert_allclose(raw * 8 * 8, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [gradcam_tf.HiResCAM, gradcam_tf.XGradCAM])
def test_on_a_gap_head_hirescam_and_xgradcam_equal_grad_cam(model, images, method):
    (expected,) = gradcam_tf.GradCAM(model).explain(images, resize=None)
    (got,) = method(model).explain(images, resize=None)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_segmentation_output_class_map(images):
    """For a spatial output, the automatic layer is the output itself and Grad-CAM of class c is
    its ReLU-ed logit map of class c, up to the scale 1/(h w) of the mean score."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    seg = layers.Conv2D(3, 1, name="seg_logits")(x)
    model = keras.Model(inputs, seg)
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["seg_logits"]
    (raw,) = cam.explain(images, targets=1, normalize=False)
    expected = np.maximum(model.predict_on_batch(images)[..., 1], 0)
    np.testing.assert_allclose(raw * 16 * 16, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.__name__)
def test_constant_maps_come_back_as_zeros(model, method):
    """All-zero images make every activation constant over space: zeros, never NaN."""
    blank = np.zeros((2, 16, 16, 3), np.float32)
    (got,) = method(model).explain(blank)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, 0.0)


def test_normalize_maps_edge_cases():
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)])
    got = gradcam_tf.normalize_maps(maps)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_array_equal(got[:2], 0.0)
    np.testing.assert_allclose(got[2], np.arange(16).reshape(4, 4) / 15, atol=1e-6)


@pytest.mark.parametrize(
    "targets",
    [
        2,
        [2, 2, 2],
        np.array([2, 2, 2]),
        tf.constant([2, 2, 2]),
        np.eye(5, dtype=np.float32)[[2, 2, 2]],
        lambda logits: logits[:, 2],
    ],
    ids=["int", "list", "array", "tensor", "one-hot", "callable"],
)
def test_target_specs_agree(model, images, targets):
    (expected,) = gradcam_tf.GradCAM(model).explain(images, targets=np.array([2, 2, 2]))
    (got,) = gradcam_tf.GradCAM(model).explain(images, targets=targets)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_default_target_is_the_predicted_class(model, images):
    predicted = np.argmax(model.predict_on_batch(images), axis=-1)
    for method in (gradcam_tf.GradCAM, gradcam_tf.Saliency):
        (default,) = method(model).explain(images)
        (explicit,) = method(model).explain(images, targets=predicted)
        np.testing.assert_array_equal(default, explicit)


def test_resize_modes(model, images):
    cam = gradcam_tf.GradCAM(model)
    (small,) = cam.explain(images, resize=None)
    (raw,) = cam.explain(images, resize=None, normalize=False)
    (zoomed,) = cam.explain(images, resize="zoom")
    (bilinear,) = cam.explain(images, resize="bilinear")
    assert small.shape == (3, 8, 8) and zoomed.shape == bilinear.shape == (3, 16, 16)
    expected = gradcam_tf.normalize_maps(tf.image.resize(raw[..., None], (16, 16))[..., 0])
    np.testing.assert_allclose(bilinear, expected, atol=1e-6)
    # zoom is corner-aligned: the corners of the map are the corners of the image.
    np.testing.assert_allclose(
        gradcam_tf.resize_maps(raw, (16, 16), "zoom")[:, [0, -1]][:, :, [0, -1]],
        raw[:, [0, -1]][:, :, [0, -1]],
        rtol=1e-6,
    )
    assert np.abs(zoomed - bilinear).max() > 1e-3


def test_score_cam_is_batch_independent(model, images):
    """Each image keeps its own top channels, so batching does not change its map; the
    batch size of the masked forward passes does not either."""
    cam = gradcam_tf.ScoreCAM(model, max_channels=3, batch_size=4)
    together = cam.explain(images)[0]
    for b in range(len(images)):
        (alone,) = gradcam_tf.ScoreCAM(model, max_channels=3, batch_size=64).explain(
            images[b : b + 1], targets=None
        )
        np.testing.assert_allclose(together[b], alone[0], atol=1e-5)


def test_smoothgrad_limits(model, images):
    (vanilla,) = gradcam_tf.Saliency(model).explain(images)
    (no_noise,) = gradcam_tf.SmoothGrad(model, samples=3, noise=0.0).explain(images)
    np.testing.assert_allclose(no_noise, vanilla, atol=1e-6)
    a = gradcam_tf.SmoothGrad(model, samples=4, seed=3, batch_size=3).explain(images)[0]
    b = gradcam_tf.SmoothGrad(model, samples=4, seed=3, batch_size=12).explain(images)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)  # same noise whatever the chunking
    assert np.abs(a - vanilla).max() > 1e-3


def test_saliency_keep_channels(model, images):
    (kept,) = gradcam_tf.Saliency(model).explain(images, keep_channels=True, normalize=False)
    (reduced,) = gradcam_tf.Saliency(model).explain(images, normalize=False)
    assert kept.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(kept.max(axis=-1), reduced)


def test_custom_method_overrides_one_hook(model, images):
    """The extension point: a method is a subclass overriding `channel_weights`."""

    class PositiveGradCAM(gradcam_tf.BaseCAM):
        def channel_weights(self, ctx):
            return tf.reduce_mean(tf.nn.relu(ctx.gradients), axis=(1, 2))

    (got,) = PositiveGradCAM(model).explain(images)
    assert got.shape == (3, 16, 16) and np.isfinite(got).all()
