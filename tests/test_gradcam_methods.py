"""Oracles and limiting cases of the CAM and saliency methods, targets and post-processing."""

import cv2
import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from gradcam_models import ALL_METHODS, method_id
from keras import layers

import gradcam_tf


def _classic_cam(model, images, class_ids):
    """CAM (Zhou et al. 2016) of a conv -> GAP -> Dense head: ReLU(sum_k w_kc A_k)."""
    acts = keras.Model(model.inputs, model.get_layer("conv2").output)(images).numpy()
    kernel = model.get_layer("logits").get_weights()[0]  # (channels, classes)
    return np.maximum(np.einsum("bhwk,kb->bhw", acts, kernel[:, class_ids]), 0)


def test_grad_cam_on_a_gap_head_is_classic_cam(tiny_model, tiny_images):
    """Up to the scale 1/(h w) of the gradient of a mean (compared before normalisation: the
    min-max epsilon 1e-7 is not negligible next to the range of a small raw map)."""
    ids = [4, 0, 2]
    cam = gradcam_tf.GradCAM(tiny_model)
    (raw,) = cam.explain(tiny_images, targets=ids, resize=None, normalize=False)
    expected = _classic_cam(tiny_model, tiny_images, ids)
    assert (expected.max(axis=(1, 2)) > 0).all()
    np.testing.assert_allclose(raw * 8 * 8, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [gradcam_tf.HiResCAM, gradcam_tf.XGradCAM])
def test_on_a_gap_head_hirescam_and_xgradcam_equal_grad_cam(tiny_model, tiny_images, method):
    (expected,) = gradcam_tf.GradCAM(tiny_model).explain(tiny_images, resize=None)
    (got,) = method(tiny_model).explain(tiny_images, resize=None)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_segmentation_output_class_map(tiny_images):
    """For a spatial output, the automatic layer is the output itself and Grad-CAM of class c is
    its ReLU-ed logit map of class c, up to the scale 1/(h w) of the mean score."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    seg = layers.Conv2D(3, 1, name="seg_logits")(x)
    model = keras.Model(inputs, seg)
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["seg_logits"]
    (raw,) = cam.explain(tiny_images, targets=1, normalize=False)
    expected = np.maximum(model.predict_on_batch(tiny_images)[..., 1], 0)
    np.testing.assert_allclose(raw * 16 * 16, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ALL_METHODS, ids=method_id)
def test_constant_maps_come_back_as_zeros(tiny_model, method):
    """All-zero images make every activation constant over space: zeros, never NaN."""
    blank = np.zeros((2, 16, 16, 3), np.float32)
    (got,) = method(tiny_model).explain(blank)
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
def test_target_specs_agree(tiny_model, tiny_images, targets):
    (expected,) = gradcam_tf.GradCAM(tiny_model).explain(tiny_images, targets=np.array([2, 2, 2]))
    (got,) = gradcam_tf.GradCAM(tiny_model).explain(tiny_images, targets=targets)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_default_target_is_the_predicted_class(tiny_model, tiny_images):
    predicted = np.argmax(tiny_model.predict_on_batch(tiny_images), axis=-1)
    for method in (gradcam_tf.GradCAM, gradcam_tf.Saliency):
        (default,) = method(tiny_model).explain(tiny_images)
        (explicit,) = method(tiny_model).explain(tiny_images, targets=predicted)
        np.testing.assert_array_equal(default, explicit)


def test_resize_modes(tiny_model, tiny_images):
    cam = gradcam_tf.GradCAM(tiny_model)
    (small,) = cam.explain(tiny_images, resize=None)
    (raw,) = cam.explain(tiny_images, resize=None, normalize=False)
    (zoomed,) = cam.explain(tiny_images, resize="zoom")
    (bilinear,) = cam.explain(tiny_images, resize="bilinear")
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


def test_score_cam_progress_counts_the_channels_and_changes_nothing(tiny_model, tiny_images,
                                                                   capsys):  # fmt: skip
    quiet = gradcam_tf.ScoreCAM(tiny_model, max_channels=3).explain(tiny_images)
    shown = gradcam_tf.ScoreCAM(tiny_model, max_channels=3, progress=True).explain(tiny_images)
    np.testing.assert_array_equal(quiet[0], shown[0])
    err = capsys.readouterr().err
    assert "Score-CAM conv2" in err and "/3 [" in err  # the layer and the channels to score


def test_score_cam_is_batch_independent(tiny_model, tiny_images):
    """Each image keeps its own top channels, so batching does not change its map; the
    batch size of the masked forward passes does not either."""
    cam = gradcam_tf.ScoreCAM(tiny_model, max_channels=3, batch_size=4)
    together = cam.explain(tiny_images)[0]
    for b in range(len(tiny_images)):
        (alone,) = gradcam_tf.ScoreCAM(tiny_model, max_channels=3, batch_size=64).explain(
            tiny_images[b : b + 1], targets=None
        )
        np.testing.assert_allclose(together[b], alone[0], atol=1e-5)


def test_smoothgrad_limits(tiny_model, tiny_images):
    (vanilla,) = gradcam_tf.Saliency(tiny_model).explain(tiny_images)
    (no_noise,) = gradcam_tf.SmoothGrad(tiny_model, samples=3, noise=0.0).explain(tiny_images)
    np.testing.assert_allclose(no_noise, vanilla, atol=1e-6)
    a = gradcam_tf.SmoothGrad(tiny_model, samples=4, seed=3, batch_size=3).explain(tiny_images)[0]
    b = gradcam_tf.SmoothGrad(tiny_model, samples=4, seed=3, batch_size=12).explain(tiny_images)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)  # same noise whatever the chunking
    assert np.abs(a - vanilla).max() > 1e-3


def test_saliency_keep_channels(tiny_model, tiny_images):
    (kept,) = gradcam_tf.Saliency(tiny_model).explain(
        tiny_images, keep_channels=True, normalize=False
    )
    (reduced,) = gradcam_tf.Saliency(tiny_model).explain(tiny_images, normalize=False)
    assert kept.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(kept.max(axis=-1), reduced)


def _conv2_activations(model, images) -> np.ndarray:
    return keras.Model(model.inputs, model.get_layer("conv2").output)(images).numpy()


def test_custom_channel_weights_hook_gives_the_weighted_sum_of_activations(tiny_model, tiny_images):
    """The extension point: a subclass overriding `channel_weights` alone gets
    ``ReLU(sum_c w_c A_c)``, then the base class's resize (half-pixel bilinear, as
    ``cv2.resize``, by default; tf-keras-vis' zoom on request) and min-max normalisation."""
    known = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    seen = []

    class KnownWeights(gradcam_tf.BaseCAM):
        def channel_weights(self, ctx):
            seen.append((ctx.layer, ctx.output, tuple(ctx.target.class_ids)))
            return tf.constant(known)

    weighted = np.einsum("bhwc,bc->bhw", _conv2_activations(tiny_model, tiny_images), known)
    expected = np.maximum(weighted, 0).astype(np.float32)
    assert (weighted < 0).any() and (expected.max(axis=(1, 2)) > 0).all()  # ReLU matters
    cam = KnownWeights(tiny_model)
    (raw,) = cam.explain(tiny_images, targets=[4, 0, 2], resize=None, normalize=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)
    assert seen == [("conv2", "logits", (4, 0, 2))]
    (final,) = cam.explain(tiny_images, targets=[4, 0, 2])
    bilinear = np.stack([cv2.resize(m, (16, 16), interpolation=cv2.INTER_LINEAR) for m in expected])
    np.testing.assert_allclose(final, gradcam_tf.normalize_maps(bilinear), atol=1e-5)
    (zoom,) = cam.explain(tiny_images, targets=[4, 0, 2], resize="zoom")
    zoomed = scipy.ndimage.zoom(expected, (1, 2, 2), order=1)
    np.testing.assert_allclose(zoom, gradcam_tf.normalize_maps(zoomed), atol=1e-5)


def test_custom_compute_map_hook_replaces_the_whole_map(tiny_model, tiny_images):
    """A pixel-wise method overrides `compute_map`; a gradient-free one says so and gets no
    gradients."""

    class FirstChannel(gradcam_tf.BaseCAM):
        needs_gradients = False

        def compute_map(self, ctx):
            assert ctx.gradients is None
            return ctx.activations[..., 0] - 0.05

    (raw,) = FirstChannel(tiny_model).explain(tiny_images, resize=None, normalize=False)
    first = _conv2_activations(tiny_model, tiny_images)[..., 0]
    np.testing.assert_allclose(raw, np.maximum(first - 0.05, 0), rtol=1e-6, atol=1e-7)
    assert FirstChannel(tiny_model).gradient_passes() == 0


def test_a_method_without_a_hook_says_which_one_to_override(tiny_model, tiny_images):
    with pytest.raises(NotImplementedError, match="BaseCAM must override channel_weights"):
        gradcam_tf.BaseCAM(tiny_model).explain(tiny_images)
