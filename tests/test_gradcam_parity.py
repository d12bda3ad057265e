"""gradcam_tf agrees with tf-keras-vis 0.8.7 (the numeric anchor) to 1e-5.

tf-keras-vis 0.8.7 runs directly on Keras 3 models here (`tf.keras` is Keras 3, no tf_keras
needed), so both libraries explain the very same model object: same layer, same class ids,
``seek_penultimate_conv_layer=False``, ``expand_cam`` True (our ``resize="zoom"``) and False
(our ``resize=None``).
"""

import gradcam_models
import numpy as np
import pytest

import gradcam_tf

tf_keras_vis = pytest.importorskip("tf_keras_vis")
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # noqa: E402
from tf_keras_vis.layercam import Layercam  # noqa: E402
from tf_keras_vis.saliency import Saliency as TkvSaliency  # noqa: E402
from tf_keras_vis.scorecam import Scorecam  # noqa: E402
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: E402
from tf_keras_vis.utils.scores import CategoricalScore  # noqa: E402

ATOL = 1e-5
CLASS_IDS = [0, 3, 1]
GRADIENT_METHODS = [
    (gradcam_tf.GradCAM, Gradcam),
    (gradcam_tf.GradCAMPlusPlus, GradcamPlusPlus),
    (gradcam_tf.LayerCAM, Layercam),
]


def _theirs(cls, model, images, layer, expand, ids=CLASS_IDS, **kwargs):
    result = cls(model, clone=False)(
        CategoricalScore(ids),
        images,
        penultimate_layer=layer,
        seek_penultimate_conv_layer=False,
        expand_cam=expand,
        **kwargs,
    )
    return np.asarray(result, np.float32)


def _assert_informative(maps):
    """Guards the comparisons against trivially equal (all-zero) maps."""
    assert all(m.max() > 0.9 for m in maps), [float(m.max()) for m in maps]


@pytest.mark.parametrize("expand", [True, False], ids=["zoom", "feature-map"])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
@pytest.mark.parametrize("ours, theirs", GRADIENT_METHODS, ids=lambda m: m.__name__)
def test_gradient_cams_match_tf_keras_vis(tiny_model, tiny_images, ours, theirs, layer, expand):
    expected = _theirs(theirs, tiny_model, tiny_images, layer, expand)
    resize = "zoom" if expand else None
    (got,) = ours(tiny_model).explain(tiny_images, targets=CLASS_IDS, layers=layer, resize=resize)
    assert got.shape == expected.shape
    _assert_informative(got)
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("expand", [True, False], ids=["zoom", "feature-map"])
def test_score_cam_matches_tf_keras_vis(tiny_model, tiny_images, expand):
    expected = _theirs(Scorecam, tiny_model, tiny_images, "conv2", expand, batch_size=8)
    resize = "zoom" if expand else None
    cam = gradcam_tf.ScoreCAM(tiny_model, batch_size=8)
    (got,) = cam.explain(tiny_images, targets=CLASS_IDS, layers="conv2", resize=resize)
    _assert_informative(got)
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_faster_score_cam_matches_tf_keras_vis_on_one_image(tiny_model, tiny_images):
    one = tiny_images[1:2]
    expected = _theirs(Scorecam, tiny_model, one, "conv2", True, ids=[3], max_N=3)
    (got,) = gradcam_tf.ScoreCAM(tiny_model, max_channels=3).explain(
        one, targets=[3], layers="conv2", resize="zoom"
    )
    _assert_informative(got)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    (full,) = gradcam_tf.ScoreCAM(tiny_model).explain(
        one, targets=[3], layers="conv2", resize="zoom"
    )
    assert np.abs(full - got).max() > 1e-3  # keeping 3 of 8 channels does change the map


def test_saliency_matches_tf_keras_vis(tiny_model, tiny_images):
    expected = np.asarray(
        TkvSaliency(tiny_model, clone=False)(CategoricalScore(CLASS_IDS), tiny_images)
    )
    (got,) = gradcam_tf.Saliency(tiny_model).explain(tiny_images, targets=CLASS_IDS)
    _assert_informative(got)
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_smoothgrad_matches_tf_keras_vis_with_the_same_noise(tiny_model, tiny_images, monkeypatch):
    samples, seed = 5, 7
    standard = np.random.default_rng(seed).standard_normal((samples, *tiny_images.shape))

    def same_noise(loc, scale, size):
        assert tuple(size) == standard.shape
        return loc + np.asarray(scale) * standard

    with monkeypatch.context() as patch:
        patch.setattr(np.random, "normal", same_noise)
        expected = TkvSaliency(tiny_model, clone=False)(
            CategoricalScore(CLASS_IDS), tiny_images, smooth_samples=samples, smooth_noise=0.2
        )
    # batch_size 6 = two noisy copies of the batch of 3 per pass: the noise is drawn in chunks.
    smooth = gradcam_tf.SmoothGrad(tiny_model, samples=samples, noise=0.2, seed=seed, batch_size=6)
    (got,) = smooth.explain(tiny_images, targets=CLASS_IDS)
    _assert_informative(got)
    np.testing.assert_allclose(got, np.asarray(expected), atol=ATOL)


def test_logits_of_a_softmax_model_match_replace_to_linear(tiny_images):
    """Our logits, read from the Dense input without touching the model, equal tf-keras-vis'
    ReplaceToLinear on a clone; the user's model keeps its softmax."""
    model = gradcam_models.tiny_cnn(final_activation="softmax")
    before = model.predict_on_batch(tiny_images)
    expected = np.asarray(
        Gradcam(model, model_modifier=ReplaceToLinear())(
            CategoricalScore(CLASS_IDS),
            tiny_images,
            penultimate_layer="conv2",
            seek_penultimate_conv_layer=False,
        )
    )
    (got,) = gradcam_tf.GradCAM(model).explain(
        tiny_images, targets=CLASS_IDS, layers="conv2", resize="zoom"
    )
    _assert_informative(got)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    assert model.get_layer("probs").activation is not None
    assert model.get_layer("probs").get_config()["activation"] == "softmax"
    np.testing.assert_array_equal(model.predict_on_batch(tiny_images), before)
