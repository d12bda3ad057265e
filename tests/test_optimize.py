"""Inference rewrites: BatchNorm folding is exact, leaves the input model alone, saves and loads."""

import golden
import keras
import numpy as np
import pytest
from helpers import randomize_batchnorm

from msdnet_tf.model.convert import load_reference_weights
from msdnet_tf.model.fold import fold_batchnorm, foldable_pairs
from msdnet_tf.model.presets import build_preset
from msdnet_tf.runtime import configure_cpu_threads


def _outputs(model, x):
    return [np.asarray(o) for o in model(x, training=False)]


def _batchnorm_names(model):
    return {
        layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    }


@pytest.mark.parametrize("preset", ["testing", "cifar10_anytime"])
def test_fold_batchnorm_equals_the_original_in_inference_mode(preset):
    model = randomize_batchnorm(build_preset(preset))
    before = [w.numpy().copy() for w in model.weights]
    folded = fold_batchnorm(model)

    x = np.random.default_rng(1).normal(size=(4, *model.input_shape[1:])).astype("float32")
    for want, got in zip(_outputs(model, x), _outputs(folded, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert folded.output_names == model.output_names
    # Every BatchNorm is gone; every other layer keeps its name; every conv now has a bias.
    assert not _batchnorm_names(folded)
    names = [layer.name for layer in folded.layers]
    assert len(names) == len(set(names))
    assert set(names) == {layer.name for layer in model.layers} - _batchnorm_names(model)
    assert len(foldable_pairs(model)) == len(_batchnorm_names(model))
    assert all(layer.use_bias for layer in folded.layers if isinstance(layer, keras.layers.Conv2D))
    # The input model is untouched.
    assert _batchnorm_names(model)
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_folded_golden_model_gives_the_reference_logits():
    """The golden weights have non-trivial BN statistics (reference running mean/var)."""
    config = "c10_anytime_b7"
    model = build_preset("cifar10_anytime")
    load_reference_weights(model, golden.formula_state_dict(config))
    x = golden.formula_input(2, 32)
    folded = fold_batchnorm(model)
    outputs = _outputs(folded, x)
    for got, want in zip(outputs, _outputs(model, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    for logits, want in zip(outputs, golden.golden(config)["exits"], strict=True):
        np.testing.assert_allclose(logits[0, :5], want["first5_sample0"], atol=1e-4)
        assert logits.argmax(axis=1).tolist() == want["argmax_per_sample"]


def test_folded_model_saves_and_loads_in_safe_mode(tmp_path, testing_model):
    folded = fold_batchnorm(randomize_batchnorm(keras.models.clone_model(testing_model)))
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    for a, b in zip(_outputs(folded, x), _outputs(loaded, x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.output_names == folded.output_names


def _small_model():
    """Pairs that fold (with and without conv bias, Conv1D) and pairs that must not."""
    image = keras.Input((8, 8, 3), name="image")
    a = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="a_conv")(image)
    a = keras.layers.BatchNormalization(epsilon=1e-5, name="a_bn")(a)
    # The conv output also feeds a second consumer: folding would change that consumer.
    b_conv = keras.layers.Conv2D(4, 1, name="b_conv")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b_conv)
    b = keras.layers.Add(name="b_add")([b, b_conv])
    # A BatchNorm over a spatial axis is not a per-channel affine map of the conv.
    c = keras.layers.Conv2D(4, 1, name="c_conv")(b)
    c = keras.layers.BatchNormalization(axis=1, name="c_bn")(c)
    # A conv with an activation: the BatchNorm follows the ReLU, not the conv.
    d = keras.layers.Conv2D(4, 1, activation="relu", name="d_conv")(c)
    d = keras.layers.BatchNormalization(name="d_bn")(d)
    seq = keras.layers.Reshape((64, 4), name="seq")(d)
    e = keras.layers.Conv1D(5, 3, padding="same", name="e_conv")(seq)
    e = keras.layers.BatchNormalization(scale=False, name="e_bn")(e)
    e = keras.layers.GlobalAveragePooling1D(name="pool")(e)
    # A BatchNorm that is a model output keeps its name (output names are a contract).
    out = keras.layers.Dense(3, name="dense")(e)
    out_conv = keras.layers.Conv2D(2, 1, name="out_conv")(d)
    out_bn = keras.layers.BatchNormalization(name="out_bn")(out_conv)
    return randomize_batchnorm(keras.Model(image, [out, out_bn], name="small"), seed=3)


def test_fold_batchnorm_folds_only_safe_pairs():
    model = _small_model()
    assert foldable_pairs(model) == [("a_conv", "a_bn"), ("e_conv", "e_bn")]
    folded = fold_batchnorm(model)
    assert _batchnorm_names(folded) == {"b_bn", "c_bn", "d_bn", "out_bn"}
    assert folded.output_names == model.output_names == ["dense", "out_bn"]
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 3)).astype("float32")
    for want, got in zip(_outputs(model, x), _outputs(folded, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_fold_batchnorm_without_batchnorm_is_a_copy():
    image = keras.Input((4,), name="x")
    model = keras.Model(image, keras.layers.Dense(2, name="dense")(image))
    folded = fold_batchnorm(model)
    assert folded is not model
    assert folded.get_layer("dense") is not model.get_layer("dense")
    np.testing.assert_array_equal(
        folded.get_layer("dense").kernel.numpy(), model.get_layer("dense").kernel.numpy()
    )


@pytest.mark.parametrize(
    "model,message",
    [
        ("not a model", "Expected a keras.Model"),
        (
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
            "functional models",
        ),
    ],
)
def test_fold_batchnorm_rejects_non_functional_models(model, message):
    with pytest.raises(ValueError, match=message):
        fold_batchnorm(model)


@pytest.mark.parametrize(
    "intra,inter,message",
    [(-1, 2, "`intra`"), (1, 1.5, "`inter`"), (True, 2, "`intra`")],
)
def test_configure_cpu_threads_rejects_bad_counts(intra, inter, message):
    with pytest.raises(ValueError, match=message):
        configure_cpu_threads(intra, inter)


def test_configure_cpu_threads_none_changes_nothing():
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    configure_cpu_threads(None, None)
    configure_cpu_threads(intra, inter)  # the current sizes: allowed after start-up
    assert tf.config.threading.get_intra_op_parallelism_threads() == intra
    assert tf.config.threading.get_inter_op_parallelism_threads() == inter
