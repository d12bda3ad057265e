"""Target layers: the automatic rule, names inside nested models, nested-model explanations."""

import gradcam_models
import keras
import numpy as np
import pytest
from keras import layers

import gradcam_tf


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("separable", "last_conv"),
        ("depthwise", "last_conv"),
        ("transpose", "last_conv"),
        ("bn_relu", "last_relu"),
    ],
)
def test_automatic_layer_is_the_last_spatial_layer_whatever_its_class(kind, expected):
    model = gradcam_models.exotic_convs_model(kind)
    assert gradcam_tf.find_target_layers(model) == [expected]
    (cam,) = gradcam_tf.GradCAM(model).explain(gradcam_models.images(2))
    assert cam.shape == (2, 16, 16) and np.isfinite(cam).all()


def test_one_by_one_maps_are_skipped():
    model = gradcam_models.one_by_one_tail_model()
    assert gradcam_tf.find_target_layers(model) == ["conv"]
    assert gradcam_tf.spatial_layer_names(model) == ["conv"]


def test_nested_functional_backbone_is_opened_up():
    nested = gradcam_models.nested_backbone_model()
    images = gradcam_models.images(3)
    cam = gradcam_tf.GradCAM(nested)
    assert cam.target_layers == ["backbone/conv2"]
    assert gradcam_tf.spatial_layer_names(nested) == ["rescale", "backbone/conv1", "backbone/conv2"]
    # The same network built flat, with the same weights, gives the same maps.
    flat = gradcam_tf.GradCAM(gradcam_models.flat_twin_of_nested(nested))
    for nested_name, flat_name in [("backbone/conv1", "conv1"), ("conv2", "conv2")]:
        (got,) = cam.explain(images, layers=nested_name)
        (expected,) = flat.explain(images, layers=flat_name)
        assert got.max() > 0.9
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # The nested model's name stands for its output.
    np.testing.assert_allclose(
        cam.explain(images, layers="backbone")[0], cam.explain(images)[0], atol=1e-6
    )
    # A keras Layer object from inside the nested model works too.
    conv1 = nested.get_layer("backbone").get_layer("conv1")
    np.testing.assert_allclose(
        cam.explain(images, layers=conv1)[0], cam.explain(images, layers="conv1")[0], atol=1e-6
    )


def test_nested_sequential_models():
    model = gradcam_models.nested_backbone_model(sequential=True)
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["backbone/conv2"]
    assert cam.output_names == ["logits"]
    maps = cam.explain(gradcam_models.images(2), layers="conv1")
    assert maps[0].shape == (2, 16, 16) and maps[0].max() > 0.9


def test_all_methods_on_nested_model():
    model = gradcam_models.nested_backbone_model()
    images = gradcam_models.images(2)
    for method in (gradcam_tf.GradCAMPlusPlus, gradcam_tf.LayerCAM, gradcam_tf.ScoreCAM):
        (cam,) = method(model).explain(images, layers="backbone/conv1")
        assert cam.shape == (2, 16, 16) and np.isfinite(cam).all()
    (saliency,) = gradcam_tf.Saliency(model).explain(images)
    assert saliency.shape == (2, 16, 16) and saliency.max() > 0.9


def test_explaining_does_not_change_the_model():
    model = gradcam_models.tiny_cnn(final_activation="softmax")
    images = gradcam_models.images(2)
    config = model.get_config()
    before = model.predict_on_batch(images)
    weights = [w.copy() for w in model.get_weights()]
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    for method in (gradcam_tf.GradCAM, gradcam_tf.ScoreCAM, gradcam_tf.Saliency):
        method(model).explain(images)
    assert model.get_config() == config
    assert model.get_layer("probs").get_config()["activation"] == "softmax"
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes
    for got, expected in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model.predict_on_batch(images), before)


def test_logits_are_read_from_a_separate_activation_layer():
    images = gradcam_models.images(3)
    linear = gradcam_models.tiny_cnn()
    separate = gradcam_models.tiny_cnn(final_activation="softmax", separate_activation=True)
    inside = gradcam_models.tiny_cnn(final_activation="softmax")
    expected = gradcam_tf.GradCAM(linear).explain(images, targets=[0, 1, 2])[0]
    as_op = keras.Model(linear.inputs, keras.ops.softmax(linear.output))
    for model in (separate, inside, as_op):  # same seed: same weights as `linear`
        got = gradcam_tf.GradCAM(model).explain(images, targets=[0, 1, 2])[0]
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # score_on="probabilities" differs from logits (the softmax couples the classes).
    probs = gradcam_tf.GradCAM(inside, score_on="probabilities").explain(images, [0, 1, 2])[0]
    assert np.abs(probs - expected).max() > 1e-3


@pytest.mark.parametrize("call", ["positional", "keyword"])
def test_transfer_learning_pattern_base_called_with_training_false(call):
    """`base(x, training=False)` (or `base(inputs=x, ...)`), the keras.io fine-tuning recipe."""
    keras.utils.set_random_seed(0)
    inner = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inner)
    x = layers.BatchNormalization(name="bn")(x)
    base = keras.Model(inner, layers.ReLU(name="relu")(x), name="base")
    inputs = keras.Input((16, 16, 3), name="image")
    features = base(inputs, training=False) if call == "positional" else base(inputs=inputs)
    pooled = layers.GlobalAveragePooling2D(name="gap")(features)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(pooled))
    cam = gradcam_tf.GradCAM(model)
    assert cam.target_layers == ["base/relu"]
    (got,) = cam.explain(gradcam_models.images(2), targets=[0, 1])
    assert got.shape == (2, 16, 16) and got.max() > 0.9


@pytest.mark.parametrize("builder", ["nested_backbone_model", "multi_exit_cnn"])
def test_same_maps_after_keras_save_and_load(builder, tmp_path):
    model = getattr(gradcam_models, builder)()
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    images = gradcam_models.images(2)
    expected = gradcam_tf.GradCAM(model).explain(images)
    got = gradcam_tf.GradCAM(reloaded).explain(images)
    assert gradcam_tf.GradCAM(reloaded).target_layers == gradcam_tf.GradCAM(model).target_layers
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
