"""Fast kernels: same outputs, gradients and BatchNorm statistics as Keras' own layers; nothing
of the model (config, weights, files) changes; undone on request; ineligible layers untouched."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize_batchnorm

from msdnet_tf import training
from msdnet_tf.config import base_config
from msdnet_tf.model.presets import build_preset
from msdnet_tf.training.kernels import (
    batch_normalization_training,
    fast_kernel_layers,
    is_fusable_batchnorm,
    is_pointwise_conv,
    pointwise_convolution,
    use_fast_kernels,
    use_standard_kernels,
)

RNG = np.random.default_rng(0)


def _batchnorm(shape, **kwargs):
    """A built BatchNormalization with non-trivial gamma, beta and moving statistics."""
    layer = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, **kwargs)
    layer.build(shape)
    return randomize_batchnorm(layer, seed=len(shape))


def _twin(layer, shape):
    twin = layer.__class__.from_config(layer.get_config())
    twin.build(shape)
    twin.set_weights(layer.get_weights())
    return twin


def _training_step(layer, x, dy):
    """Output, input/weight gradients (for the output gradient dy) and moving statistics."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    grads = tape.gradient(y, [x, *layer.trainable_variables], output_gradients=tf.constant(dy))
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return [y.numpy(), *(g.numpy() for g in grads), *moving]


@pytest.mark.parametrize("shape", [(8, 6, 5, 7), (16, 3), (4, 3, 3, 3, 2)])
def test_fused_batchnorm_equals_keras_in_training(shape):
    keras_layer = _batchnorm(shape)
    fast_layer = _twin(keras_layer, shape)
    model = keras.Sequential([keras.Input(shape[1:]), fast_layer])
    assert use_fast_kernels(model) == {"pointwise_conv": 0, "batchnorm": 1}

    x = (RNG.normal(size=shape) * 3.0 + 1.5).astype("float32")
    dy = RNG.normal(size=shape).astype("float32")
    # Inference mode is Keras' own computation, bit for bit.
    np.testing.assert_array_equal(fast_layer(x, training=False), keras_layer(x, training=False))
    names = ["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"]
    for _ in range(2):  # the moving statistics move twice, alike
        want, got = _training_step(keras_layer, x, dy), _training_step(fast_layer, x, dy)
        for name, a, b in zip(names, want, got, strict=True):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5, err_msg=name)


def test_fused_batchnorm_gradient_matches_finite_differences_in_float64():
    """The closed-form gradient against central differences of the forward pass (float64)."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(5, 2, 2, 3)), tf.float64)
    gamma = tf.constant(rng.uniform(0.5, 1.5, 3), tf.float64)
    beta = tf.constant(rng.normal(size=3), tf.float64)
    weights = tf.constant(rng.normal(size=(5, 2, 2, 3)), tf.float64)

    def loss(x, gamma, beta):
        return tf.reduce_sum(weights * batch_normalization_training(x, gamma, beta, 1e-5)[0])

    theoretical, numerical = tf.test.compute_gradient(loss, [x, gamma, beta])
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7)


def test_frozen_batchnorm_keeps_keras_inference_behaviour_in_training_mode():
    layer = _batchnorm((4, 3, 3, 2))
    twin = _twin(layer, (4, 3, 3, 2))
    use_fast_kernels(keras.Sequential([keras.Input((3, 3, 2)), layer]))
    layer.trainable = twin.trainable = False
    x = RNG.normal(size=(4, 3, 3, 2)).astype("float32")
    np.testing.assert_array_equal(layer(x, training=True), twin(x, training=True))
    np.testing.assert_array_equal(layer.moving_mean.numpy(), twin.moving_mean.numpy())


@pytest.mark.parametrize("shape", [(2, 5, 4, 6), (1, 1, 1, 3), (3, 2, 7, 1)])
def test_pointwise_convolution_equals_conv2d(shape):
    x = tf.constant(RNG.normal(size=shape).astype("float32"))
    kernel = tf.constant(RNG.normal(size=(1, 1, x.shape[-1], 5)).astype("float32"))
    dy = tf.constant(RNG.normal(size=(*x.shape[:-1], 5)).astype("float32"))
    results = []
    for op in (lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"), pointwise_convolution):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = op(x, kernel)
        results.append([y, *tape.gradient(y, [x, kernel], output_gradients=dy)])
    for want, got in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert results[1][0].shape == results[0][0].shape


def test_only_eligible_layers_are_swapped():
    image = keras.Input((8, 8, 4))
    convs = {
        "pointwise": keras.layers.Conv2D(3, 1),
        "strided_1x1": keras.layers.Conv2D(3, 1, strides=2),
        "3x3": keras.layers.Conv2D(3, 3, padding="same"),
        "dilated_1x1": keras.layers.Conv2D(3, 1, dilation_rate=2),
        "grouped_1x1": keras.layers.Conv2D(4, 1, groups=2),
    }
    norms = {
        "fusable": keras.layers.BatchNormalization(),
        "axis1": keras.layers.BatchNormalization(axis=1),
        "no_scale": keras.layers.BatchNormalization(scale=False),
        "renorm": keras.layers.BatchNormalization(renorm=True),
        "synchronized": keras.layers.BatchNormalization(synchronized=True),
    }
    outputs = [layer(image) for layer in convs.values()]
    outputs += [layer(image) for layer in norms.values()]
    model = keras.Model(image, outputs)
    assert [name for name, c in convs.items() if is_pointwise_conv(c)] == ["pointwise"]
    assert [name for name, n in norms.items() if is_fusable_batchnorm(n)] == ["fusable"]
    assert use_fast_kernels(model) == {"pointwise_conv": 1, "batchnorm": 1}
    assert fast_kernel_layers(model) == {
        "pointwise_conv": [convs["pointwise"].name],
        "batchnorm": [norms["fusable"].name],
    }


@pytest.fixture(scope="module")
def models():
    """Two `testing` MSD-Nets with the same non-trivial weights; the second runs fast kernels."""
    plain = randomize_batchnorm(build_preset("testing"))
    fast = build_preset("testing")
    fast.set_weights(plain.get_weights())
    counts = use_fast_kernels(fast)
    return plain, fast, counts


def test_msdnet_counts_every_1x1_conv_and_batchnorm(models):
    plain, fast, counts = models
    # The bottlenecks (`..._1x1_conv`) and the transitions (`..._transition_scale{s}_conv`).
    pointwise = [
        layer.name
        for layer in plain.layers
        if layer.name.endswith("_1x1_conv")
        or ("_transition_" in layer.name and layer.name.endswith("_conv"))
    ]
    norms = [layer for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert counts == {"pointwise_conv": len(pointwise), "batchnorm": len(norms)}
    assert sorted(fast_kernel_layers(fast)["pointwise_conv"]) == sorted(pointwise)
    assert use_fast_kernels(fast) == counts  # twice is harmless


def test_msdnet_training_outputs_and_gradients_equal_the_plain_model(models):
    plain, fast, _ = models
    x = RNG.normal(size=(6, 16, 16, 3)).astype("float32")
    y = RNG.integers(0, 10, 6)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = []
    for model in (plain, fast):
        weights = model.get_weights()
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.add_n([loss_fn(y, z) for z in logits])
        grads = tape.gradient(loss, model.trainable_variables)
        statistics = [w.numpy() for w in model.non_trainable_weights]
        model.set_weights(weights)  # undo the moving-statistics update for the next test
        results.append(([z.numpy() for z in logits], [g.numpy() for g in grads], statistics))
    (logits_a, grads_a, stats_a), (logits_b, grads_b, stats_b) = results
    for a, b in zip(logits_a, logits_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for a, b, v in zip(grads_a, grads_b, plain.trainable_variables, strict=True):
        scale = np.abs(a).max() + 1e-12
        np.testing.assert_allclose(b / scale, a / scale, atol=2e-4, err_msg=v.path)
    for a, b in zip(stats_a, stats_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # Inference: the same numbers.
    for a, b in zip(plain(x, training=False), fast(x, training=False), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_the_model_itself_is_unchanged_and_saves_as_plain_keras(models, tmp_path):
    plain, fast, _ = models
    assert fast.get_config() == build_preset("testing").get_config()
    path = tmp_path / "fast.keras"
    fast.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert fast_kernel_layers(loaded) == {"pointwise_conv": [], "batchnorm": []}
    x = RNG.normal(size=(2, 16, 16, 3)).astype("float32")
    for a, b in zip(fast(x, training=False), loaded(x, training=False), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_use_standard_kernels_undoes_the_swap():
    model = build_preset("testing")
    use_fast_kernels(model)
    use_standard_kernels(model)
    assert fast_kernel_layers(model) == {"pointwise_conv": [], "batchnorm": []}
    conv = model.get_layer("block1_layer1_scale0_normal_1x1_conv")
    assert conv.convolution_op.__func__ is keras.layers.Conv2D.convolution_op


def test_selective_swaps_and_bad_model():
    model = build_preset("testing")
    assert use_fast_kernels(model, pointwise_conv=False)["pointwise_conv"] == 0
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        use_fast_kernels("model.keras")


@pytest.mark.parametrize("fast", [True, False])
def test_training_compiles_with_fast_kernels_as_configured(fast):
    config = base_config("testing", "digits", epochs=1, batch_size=8)
    config.train.fast_kernels = fast
    model = training.compile_model(training.build_model(config), config, steps_per_epoch=2)
    assert bool(fast_kernel_layers(model)["batchnorm"]) is fast
    assert bool(fast_kernel_layers(model)["pointwise_conv"]) is fast


def test_public_api_of_the_package():
    import msdnet_tf
    from msdnet_tf.training import kernels

    assert msdnet_tf.use_fast_kernels is kernels.use_fast_kernels
    assert msdnet_tf.use_standard_kernels is kernels.use_standard_kernels
    for name in kernels.__all__:
        assert callable(getattr(kernels, name)), name


def test_fused_batchnorm_under_mixed_precision_matches_keras():
    """bfloat16 inputs: statistics in float32 (as Keras), output in the compute dtype."""
    shape = (8, 4, 4, 5)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras_layer = _batchnorm(shape)
        fast_layer = _twin(keras_layer, shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    use_fast_kernels(keras.Sequential([keras.Input(shape[1:]), fast_layer]))
    assert fast_kernel_layers(keras.Sequential([fast_layer]))["batchnorm"] == [fast_layer.name]
    x = tf.cast(RNG.normal(size=shape) * 2.0 + 1.0, tf.bfloat16)
    want, got = keras_layer(x, training=True), fast_layer(x, training=True)
    assert got.dtype == want.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(want, tf.float32), atol=2e-2)
    for a, b in zip(keras_layer.non_trainable_weights, fast_layer.non_trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
