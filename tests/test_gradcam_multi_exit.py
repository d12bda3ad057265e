"""Multi-output models: every exit's map from one forward and one backward pass, exactly."""

import gradcam_models
import keras
import numpy as np
import pytest
import tensorflow as tf
from gradcam_models import GRADIENT_CAMS, method_id

import gradcam_tf
from gradcam_tf.graph import FlatGraph

FEATURES = [f"exit{k}_features" for k in (1, 2, 3)]
HEAD_CONVS = [f"exit{k}_conv_out" for k in (1, 2, 3)]


@pytest.fixture
def counters(monkeypatch):
    """Counts forward replays and backward passes."""
    counts = {"forward": 0, "backward": 0}
    run, gradient = FlatGraph.run, tf.GradientTape.gradient

    def counting_run(self, *args, **kwargs):
        counts["forward"] += 1
        return run(self, *args, **kwargs)

    def counting_gradient(self, *args, **kwargs):
        counts["backward"] += 1
        return gradient(self, *args, **kwargs)

    monkeypatch.setattr(FlatGraph, "run", counting_run)
    monkeypatch.setattr(tf.GradientTape, "gradient", counting_gradient)
    return counts


def test_automatic_layers_keep_a_localizing_map_on_each_exits_path(
    multi_exit_model, multi_exit_images
):
    """Exits 1 and 2 end their heads on 16x16 and 8x8 maps (>= 7 a side): their head convs.
    Exit 3's head and block run at 4x4, so the rule walks back to the last map of at least 7x7
    on its path, block 2's output (8x8); with min_size=4 that is exit 3's head again. The
    previous rule, by name, keeps every head."""
    cam = gradcam_tf.GradCAM(multi_exit_model)
    localizing = ["exit1_conv_out", "exit2_conv_out", "block2_out"]
    assert cam.target_layers == localizing
    assert gradcam_tf.find_target_layers(multi_exit_model) == localizing
    assert gradcam_tf.find_target_layers(multi_exit_model, min_size=4) == HEAD_CONVS
    assert gradcam_tf.find_target_layers(multi_exit_model, "last_spatial") == HEAD_CONVS
    assert cam.output_names == ["exit1_logits", "exit2_logits", "exit3_logits"]
    auto = cam.explain(multi_exit_images, resize=None)
    assert [m.shape[1:] for m in auto] == [(16, 16), (8, 8), (8, 8)]
    named = cam.explain(multi_exit_images, layers=localizing, resize=None)
    last = cam.explain(multi_exit_images, layers="last_spatial", resize=None)
    heads = cam.explain(multi_exit_images, layers=HEAD_CONVS, resize=None)
    for k in range(3):
        np.testing.assert_array_equal(auto[k], named[k])
        np.testing.assert_array_equal(last[k], heads[k])


@pytest.mark.parametrize(
    "layers, passes",
    [("auto", 1), (HEAD_CONVS, 1), (FEATURES, 1), ("block1_out", 3)],
    ids=["auto", "head-convs", "features", "shared-block1"],
)
@pytest.mark.parametrize("method", GRADIENT_CAMS, ids=method_id)
def test_all_exits_at_once_equal_one_exit_at_a_time(
    multi_exit_model, multi_exit_images, method, layers, passes
):
    """All exits from the compiled one-pass graph; each exit alone from an eager explainer (so
    the comparison also covers compiled = eager, and each case traces one graph, not four)."""
    cam, one_at_a_time = method(multi_exit_model), method(multi_exit_model, compiled=False)
    targets = [None, 2, np.array([0, 1, 2, 3])]
    together = cam.explain(multi_exit_images, targets=targets, layers=layers)
    assert cam.gradient_passes(layers=layers) == passes
    for k in range(3):
        layer = layers[k] if isinstance(layers, list) else layers
        (alone,) = one_at_a_time.explain(
            multi_exit_images, targets=targets[k], layers=layer, outputs=k
        )
        assert alone.max() > 0.9  # informative map
        np.testing.assert_allclose(together[k], alone, atol=1e-6)


def test_one_forward_and_one_backward_pass(multi_exit_model, multi_exit_images, counters):
    cam = gradcam_tf.GradCAM(multi_exit_model)
    maps = cam.explain(multi_exit_images, layers=FEATURES)
    assert len(maps) == 3
    assert counters == {"forward": 1, "backward": 1}


def test_fallback_is_one_forward_and_a_backward_pass_per_mixed_exit(
    multi_exit_model, multi_exit_images, counters
):
    cam = gradcam_tf.GradCAM(multi_exit_model)
    cam.explain(
        multi_exit_images, layers="block1_out"
    )  # exits 2 and 3 read block1_out through block 2
    assert counters == {"forward": 1, "backward": 3}


def test_summing_exit_scores_naively_would_mix_exits(multi_exit_model, multi_exit_images):
    """The reason for the taps: d(sum of scores)/d(exit1_features) is not d(score1)/d(...),
    because exits 2 and 3 read the same block; our maps equal the one-exit-at-a-time ones."""
    features = [multi_exit_model.get_layer(name).output for name in FEATURES]
    probe = keras.Model(multi_exit_model.inputs, [*features, *multi_exit_model.outputs])
    x = tf.constant(multi_exit_images)
    with tf.GradientTape() as tape:
        values = probe(x)
        acts, logits = values[:3], values[3:]
        for a in acts:
            tape.watch(a)
        total = sum(tf.reduce_sum(tf.reduce_max(z, axis=-1)) for z in logits)
    naive_grads = tape.gradient(total, list(acts))
    naive = []
    for a, g in zip(acts, naive_grads):
        weights = tf.reduce_mean(g, axis=(1, 2))
        naive.append(gradcam_tf.normalize_maps(tf.nn.relu(tf.einsum("bhwc,bc->bhw", a, weights))))
    ours = gradcam_tf.GradCAM(multi_exit_model).explain(
        multi_exit_images, layers=FEATURES, resize=None
    )
    assert np.abs(naive[0] - ours[0]).max() > 1e-2  # exit 1 mixed with exits 2 and 3
    np.testing.assert_allclose(naive[2], ours[2], atol=1e-5)  # the last exit has no followers


def test_inseparable_outputs_fall_back_exactly(multi_exit_images):
    model = gradcam_models.shared_tail_cnn()
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["conv2", "conv2"]
    assert cam.gradient_passes() == 2
    together = cam.explain(multi_exit_images)
    for k in range(2):
        np.testing.assert_allclose(
            together[k], cam.explain(multi_exit_images, outputs=k)[0], atol=1e-6
        )
    assert np.abs(together[0] - together[1]).max() > 1e-2


def test_outputs_by_name_and_subset(multi_exit_model, multi_exit_images):
    cam = gradcam_tf.GradCAM(multi_exit_model)
    both = cam.explain(
        multi_exit_images, outputs=["exit3_logits", 0], layers=["block2_out", "auto"]
    )
    np.testing.assert_allclose(both[0], cam.explain(multi_exit_images, outputs=2)[0], atol=1e-6)
    np.testing.assert_allclose(both[1], cam.explain(multi_exit_images, outputs=0)[0], atol=1e-6)


@pytest.mark.parametrize(
    "method",
    [*GRADIENT_CAMS, gradcam_tf.ScoreCAM, gradcam_tf.Saliency],
    ids=method_id,
)
def test_every_method_on_every_exit(multi_exit_model, multi_exit_images, method):
    explainer = method(multi_exit_model)
    maps = explainer.explain(multi_exit_images)
    assert len(maps) == 3
    for m in maps:
        assert m.shape == (4, 16, 16) and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
    raw = explainer.explain(multi_exit_images, normalize=False)
    assert all(np.isfinite(m).all() for m in raw)


def test_msdnet_testing_preset_head_convs_and_features_in_one_pass(testing_model):
    """On the real MSD-Net (`testing` preset): the automatic layers are the block features each
    head reads (8x8; the heads' last convs are 2x2, kept by ``"last_spatial"``), and both
    endpoint families of DESIGN.md give all exits' maps in one pass, exactly."""
    msdnet_model = pytest.importorskip("msdnet_tf.model.builder")
    heads = msdnet_model.exit_head_conv_layer_names(testing_model)
    features = msdnet_model.exit_feature_layer_names(testing_model)
    cam, one_at_a_time = (
        gradcam_tf.GradCAM(testing_model),
        gradcam_tf.GradCAM(testing_model, compiled=False),
    )
    assert cam.target_layers == features
    assert gradcam_tf.find_target_layers(testing_model, "last_spatial") == heads
    size = testing_model.input_shape[1:]
    images = np.random.default_rng(0).standard_normal((2, *size)).astype(np.float32)
    for layers in (heads, features):
        assert cam.gradient_passes(layers=layers) == 1
        together = cam.explain(images, layers=layers, resize=None, normalize=False)
        for k, layer in enumerate(layers):
            (alone,) = one_at_a_time.explain(
                images, layers=layer, outputs=k, resize=None, normalize=False
            )
            np.testing.assert_allclose(together[k], alone, rtol=1e-6, atol=1e-9)
