"""Faithfulness metrics on models whose right answers are known by construction."""

import gradcam_models
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradcam_tf import metrics, sanity
from gradcam_tf.outputs import model_outputs

SIZE = 16


def _linear_model(weights: np.ndarray, bias: float, name: str = "linear") -> keras.Model:
    """p(class 0) = sigmoid(sum_p w_p x_p + bias): a 2-class softmax with logits (z, 0)."""
    height, width = weights.shape
    inputs = keras.Input((height, width, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name=f"{name}_probs")(x)
    model = keras.Model(inputs, outputs, name=name)
    kernel = np.zeros((height * width, 2), np.float32)
    kernel[:, 0] = weights.reshape(-1)
    model.get_layer(f"{name}_probs").set_weights([kernel, np.array([bias, 0.0], np.float32)])
    return model


def _score_model(kernel: np.ndarray) -> keras.Model:
    """Raw score = sum_p kernel_p x_p (one unit, linear): analytic scores with score_on='logits'."""
    inputs = keras.Input((*kernel.shape, 1))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(1, use_bias=False, name="score")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([kernel.reshape(-1, 1).astype(np.float32)])
    return model


def _gradient_map(model, images):
    """|d logit_0 / d x|, max over channels, min-max normalised: a tiny explain_fn."""
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x, training=False)[:, 0]
    grad = tf.reduce_max(tf.abs(tape.gradient(score, x)), axis=-1).numpy()
    low = grad.min(axis=(1, 2), keepdims=True)
    high = grad.max(axis=(1, 2), keepdims=True)
    return (grad - low) / (high - low + 1e-12)


@pytest.fixture(scope="module")
def linear_case():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 1, (SIZE, SIZE)) ** 3
    weights *= 8.0 / weights.sum()  # logit goes from 4 (image) to -4 (all pixels deleted)
    model = _linear_model(weights, bias=-4.0)
    images = rng.uniform(0.5, 1.0, (3, SIZE, SIZE, 1)).astype(np.float32)
    contributions = weights[None] * images[..., 0]
    perfect = contributions / contributions.max(axis=(1, 2), keepdims=True)
    random = rng.uniform(0, 1, perfect.shape)
    return model, images, perfect, random, 1.0 - perfect


def test_deletion_orders_perfect_random_inverted(linear_case):
    model, images, perfect, random, inverted = linear_case
    aucs = [
        metrics.deletion_auc(model, images, maps, 0, steps=32, batch_size=40).auc
        for maps in (perfect, random, inverted)
    ]
    assert np.all(aucs[0] < aucs[1]) and np.all(aucs[1] < aucs[2])


def test_insertion_orders_perfect_random_inverted(linear_case):
    model, images, perfect, random, inverted = linear_case
    aucs = [
        metrics.insertion_auc(model, images, maps, 0, steps=32, baseline="zeros").auc
        for maps in (perfect, random, inverted)
    ]
    assert np.all(aucs[0] > aucs[1]) and np.all(aucs[1] > aucs[2])


def test_curve_ends_and_batching(linear_case):
    model, images, perfect, *_ = linear_case
    small = metrics.deletion_auc(model, images, perfect, [0, 0, 0], steps=10, batch_size=7)
    large = metrics.deletion_auc(model, images, perfect, [0, 0, 0], steps=10, batch_size=64)
    np.testing.assert_allclose(small.scores, large.scores, rtol=1e-6)
    assert small.scores.shape == (3, 11) and small.fractions[0] == 0 and small.fractions[-1] == 1
    full = model.predict_on_batch(images)[:, 0]
    empty = model.predict_on_batch(np.zeros_like(images))[:, 0]
    np.testing.assert_allclose(small.scores[:, 0], full, rtol=1e-5)
    np.testing.assert_allclose(small.scores[:, -1], empty, rtol=1e-5)


def test_auc_of_a_linear_curve_is_one_half():
    # Score = mean of the pixels on an all-ones image: removing a fraction x leaves 1 - x.
    model = _score_model(np.full((SIZE, SIZE), 1.0 / SIZE**2))
    images = np.ones((2, SIZE, SIZE, 1), np.float32)
    maps = np.random.default_rng(1).uniform(size=(2, SIZE, SIZE))
    for steps in (7, 16):  # 256 pixels: 7 steps do not divide them, 16 do
        deletion = metrics.deletion_auc(model, images, maps, 0, steps=steps, score_on="logits")
        insertion = metrics.insertion_auc(
            model, images, maps, 0, steps=steps, baseline="zeros", score_on="logits"
        )
        expected = np.broadcast_to(1 - deletion.fractions, deletion.scores.shape)
        np.testing.assert_allclose(deletion.scores, expected, atol=1e-6)
        np.testing.assert_allclose(deletion.auc, 0.5, atol=1e-6)
        np.testing.assert_allclose(insertion.auc, 0.5, atol=1e-6)


def test_insertion_starts_from_the_blurred_image(linear_case):
    model, images, perfect, *_ = linear_case
    curve = metrics.insertion_auc(model, images, perfect, 0, steps=4, blur_sigma=2.0)
    import scipy.ndimage

    blurred = scipy.ndimage.gaussian_filter(images, (0, 2, 2, 0), mode="reflect")
    np.testing.assert_allclose(curve.scores[:, 0], model.predict_on_batch(blurred)[:, 0], 1e-5)


def test_average_drop_and_increase_analytic():
    # Score = mean over the region R (left half) - 0.5 * mean over the rest: Y = 0.5 on ones.
    region = np.zeros((SIZE, SIZE), bool)
    region[:, : SIZE // 2] = True
    kernel = np.where(region, 1.0 / region.sum(), -0.5 / (~region).sum())
    model = _score_model(kernel)
    images = np.ones((3, SIZE, SIZE, 1), np.float32)
    maps = np.stack([region.astype(float), np.full((SIZE, SIZE), 0.5), np.zeros((SIZE, SIZE))])
    result = metrics.average_drop_increase(model, images, maps, 0, score_on="logits")
    # O = 1 (> Y: an increase, no drop), O = 0.25 (drop 50 %), O = 0 (drop 100 %).
    np.testing.assert_allclose(result.original_scores, 0.5, atol=1e-6)
    np.testing.assert_allclose(result.masked_scores, [1.0, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(result.drops, [0.0, 0.5, 1.0], atol=1e-6)
    assert result.average_drop == pytest.approx(50.0, abs=1e-4)
    assert result.increase_in_confidence == pytest.approx(100 / 3)


def test_multi_output_model_uses_the_chosen_output(linear_case):
    _, images, perfect, *_ = linear_case
    inputs = keras.Input((SIZE, SIZE, 1))
    flat = keras.layers.Flatten()(inputs)
    first = keras.layers.Dense(2, name="exit1_logits")(flat)
    second = keras.layers.Dense(2, name="exit2_logits")(flat)
    model = keras.Model(inputs, [first, second])
    by_name = metrics.average_drop_increase(model, images, perfect, 1, outputs="exit2_logits")
    by_index = metrics.average_drop_increase(model, images, perfect, 1, outputs=1)
    single = keras.Model(inputs, second)
    expected = metrics.average_drop_increase(single, images, perfect, 1)
    np.testing.assert_allclose(by_name.masked_scores, expected.masked_scores, rtol=1e-6)
    np.testing.assert_allclose(by_index.original_scores, expected.original_scores, rtol=1e-6)
    logits = single.predict_on_batch(images)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(expected.original_scores, softmax[:, 1], rtol=1e-5)
    with pytest.raises(
        ValueError, match=r"must choose one output of the model's 2 .*Received: outputs=None"
    ):
        metrics.deletion_auc(model, images, perfect, 0)


def test_rank_correlation_of_a_map_with_itself_and_constant_maps():
    maps = np.random.default_rng(2).uniform(size=(3, SIZE, SIZE))
    np.testing.assert_allclose(sanity.rank_correlation(maps, maps), 1.0)
    np.testing.assert_allclose(sanity.rank_correlation(maps, -maps), -1.0)
    constant = np.zeros((3, SIZE, SIZE))
    assert list(sanity.rank_correlation(constant, constant)) == [1.0, 1.0, 1.0]
    assert list(sanity.rank_correlation(constant, maps)) == [0.0, 0.0, 0.0]


def test_randomization_check():
    model = gradcam_models.pooled_cnn()
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(3).uniform(size=(4, SIZE, SIZE, 3)).astype(np.float32)

    # The trained clone explains like the model itself: correlation 1.
    clone = sanity.clone_with_fresh_weights(model, seed=0)
    clone.set_weights(model.get_weights())
    same = sanity.rank_correlation(_gradient_map(model, images), _gradient_map(clone, images))
    np.testing.assert_allclose(same, 1.0, atol=1e-6)

    full = sanity.model_randomization_check(model, images, _gradient_map, seed=5)
    assert full.stage_names == ["all"] and full.correlations.shape == (1, 4)
    assert full.mean_correlations[0] < 0.6

    cascade = sanity.model_randomization_check(
        model, images, _gradient_map, mode="cascading", seed=5
    )
    assert cascade.stage_names == ["logits", "conv2", "conv1"]
    assert cascade.randomized_maps.shape == (3, 4, SIZE, SIZE)
    # The last cascading stage has every layer randomised, with the same seeded weights.
    np.testing.assert_allclose(cascade.randomized_maps[-1], full.randomized_maps[0], atol=1e-6)

    independent = sanity.model_randomization_check(
        model, images, _gradient_map, mode="independent", layer_names=["conv1"], seed=5
    )
    assert independent.correlations.shape == (1, 4)
    for weight, original in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, original)  # the user's weights are untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"images": np.zeros((2, SIZE, SIZE), np.float32)},
            r"4-D batch .*Received: images of shape",
        ),
        ({"images": np.zeros((2, SIZE, SIZE, 1), np.uint8)}, "floating point.*dtype uint8"),
        ({"saliency": np.zeros((2, 8, 8))}, "saliency with shape"),
        ({"saliency": np.full((2, SIZE, SIZE), 2.0)}, r"values in \[2, 2\]"),
        ({"targets": [0, 1, 0]}, "targets with shape"),
        ({"targets": [0, 5]}, r"targets in \[0, 5\]"),
        ({"score_on": "relu"}, r"`score_on` must be one of .*score_on='relu'"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    model = _linear_model(np.ones((SIZE, SIZE)) / SIZE**2, 0.0)
    arguments = {
        "images": np.ones((2, SIZE, SIZE, 1), np.float32),
        "saliency": np.full((2, SIZE, SIZE), 0.5),
        "targets": [0, 1],
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        metrics.average_drop_increase(model, **arguments)


def test_bad_steps_baseline_and_mode_raise(linear_case):
    model, images, perfect, *_ = linear_case
    with pytest.raises(ValueError, match="steps=0"):
        metrics.deletion_auc(model, images, perfect, 0, steps=0)
    with pytest.raises(ValueError, match="baseline='noise'"):
        metrics.deletion_auc(model, images, perfect, 0, baseline="noise")
    with pytest.raises(ValueError, match="mode='top'"):
        sanity.model_randomization_check(model, images, _gradient_map, mode="top")
    with pytest.raises(ValueError, match="layer_names"):
        sanity.model_randomization_check(model, images, _gradient_map, layer_names=["nope"])


def test_repeated_calls_trace_the_model_once(linear_case):
    model, images, perfect, *_ = linear_case
    model = keras.models.clone_model(model)  # a fresh model, not shared with other tests
    for _ in range(3):
        metrics.deletion_auc(model, images, perfect, 0, steps=5, batch_size=8)
        metrics.average_drop_increase(model, images, perfect, 0, batch_size=8)
    assert model_outputs(model).trace_count == 1
