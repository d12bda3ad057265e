"""Class-model visualisation by gradient ascent, on tiny models."""

import keras
import numpy as np
import pytest

from gradcam_tf.activation_maximization import activation_maximization

SIZE = 16
CLASSES = 3


def _linear_model(activation=None, seed: int = 1) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(CLASSES, activation=activation, name="logits")
    model = keras.Model(inputs, dense(x))
    kernel = np.random.default_rng(seed).standard_normal((SIZE * SIZE, CLASSES))
    dense.set_weights([kernel.astype(np.float32), np.zeros(CLASSES, np.float32)])
    return model


def test_scores_increase_markedly_for_every_class(pooled_model):
    result = activation_maximization(pooled_model, [0, 1, 2], steps=40, value_range=(-3, 3))
    assert result.images.shape == (3, SIZE, SIZE, 3) and result.images.dtype == np.float32
    assert result.score_history.shape == (40, 3)
    assert result.regularization_history.shape == (40, 3)
    assert np.all(result.regularization_history > 0)
    # From about 0 to a clear winner: 10x the start, and the top class of its own image.
    assert np.all(result.final_scores > 0.3)
    assert np.all(result.final_scores > 10 * np.abs(result.initial_scores))
    assert np.all(result.score_history[-1] > result.score_history[0])
    logits = pooled_model.predict_on_batch(result.images)
    np.testing.assert_allclose(logits[np.arange(3), [0, 1, 2]], result.final_scores, rtol=1e-5)
    assert logits.argmax(axis=1).tolist() == [0, 1, 2]
    assert np.all(result.images >= -3) and np.all(result.images <= 3)
    assert result.classes.tolist() == [0, 1, 2]


def test_unregularised_ascent_on_a_linear_model_follows_the_class_weights():
    model = _linear_model()
    kernel = model.get_layer("logits").get_weights()[0]
    start = np.zeros((SIZE, SIZE, 1), np.float32)
    result = activation_maximization(
        model, [2, 0], steps=5, l2_weight=0, tv_weight=0, jitter=0, initial=start
    )
    np.testing.assert_allclose(result.regularization_history, 0.0)
    for image, class_id in zip(result.images, [2, 0]):
        moved = image.reshape(-1)
        weights = kernel[:, class_id]
        cosine = moved @ weights / (np.linalg.norm(moved) * np.linalg.norm(weights))
        assert cosine == pytest.approx(1.0, abs=1e-5)
        # Normalised steps: each moves the image by learning_rate in RMS per pixel.
        rms = np.sqrt(np.mean(moved**2))
        assert rms == pytest.approx(5 * 0.05, rel=1e-4)


def test_softmax_output_is_maximised_before_the_softmax():
    arguments = {"steps": 5, "jitter": 0, "seed": 3}
    plain = activation_maximization(_linear_model(), [1], **arguments)
    with_softmax = activation_maximization(_linear_model("softmax"), [1], **arguments)
    np.testing.assert_allclose(with_softmax.images, plain.images, atol=1e-5)
    np.testing.assert_allclose(with_softmax.score_history, plain.score_history, atol=1e-4)


def test_multi_output_by_name_and_index():
    inputs = keras.Input((SIZE, SIZE, 1))
    flat = keras.layers.Flatten()(inputs)
    first = keras.layers.Dense(2, name="exit1_logits")(flat)
    second = keras.layers.Dense(4, activation="softmax", name="exit2_logits")(flat)
    model = keras.Model(inputs, [first, second])
    # No jitter: a Flatten + Dense model is not translation invariant.
    arguments = {"steps": 3, "jitter": 0}
    by_name = activation_maximization(model, [3, 1], outputs="exit2_logits", **arguments)
    by_index = activation_maximization(model, [3, 1], outputs=1, **arguments)
    np.testing.assert_array_equal(by_name.images, by_index.images)
    assert by_name.output_name == "exit2_logits" and by_name.output_position == 1
    assert np.all(by_name.final_scores > by_name.initial_scores)


def test_seed_determinism(pooled_model):
    arguments = {"steps": 6, "jitter": 3, "blur_every": 2}
    first = activation_maximization(pooled_model, [0, 2], seed=7, **arguments)
    again = activation_maximization(pooled_model, [0, 2], seed=7, **arguments)
    other = activation_maximization(pooled_model, [0, 2], seed=8, **arguments)
    np.testing.assert_allclose(first.images, again.images, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(first.score_history, again.score_history, rtol=1e-6)
    assert not np.allclose(first.images, other.images)


def test_blur_and_total_variation_smooth_the_image(pooled_model):
    arguments = {"steps": 10, "jitter": 0, "l2_weight": 0.0}
    rough = activation_maximization(pooled_model, [1], tv_weight=0.0, **arguments)
    blurred = activation_maximization(
        pooled_model, [1], tv_weight=0.0, blur_every=1, blur_sigma=1.0, **arguments
    )
    with_tv = activation_maximization(pooled_model, [1], tv_weight=50.0, **arguments)

    def tv(images):
        return np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean()

    assert tv(blurred.images) < tv(rough.images)
    assert tv(with_tv.images) < tv(rough.images)


def test_callback_and_progress_bar(pooled_model, capsys):
    calls = []

    def record(step, images, scores, penalties):
        calls.append((step, images.shape, scores.shape, penalties.shape))

    activation_maximization(pooled_model, 1, steps=4, callback=record, progress=True)
    assert [call[0] for call in calls] == [1, 2, 3, 4]
    assert calls[0][1:] == ((1, SIZE, SIZE, 3), (1,), (1,))
    assert "activation maximisation" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [0, 3]}, r"\[0, 3\)"),
        ({"classes": [-1]}, "classes="),
        ({"classes": []}, "non-empty"),
        ({"outputs": "exit9"}, "'exit9'"),
        ({"outputs": 4}, "outputs=4"),
        ({"steps": 0}, "steps=0"),
        ({"steps": 2.5}, "steps=2.5"),
        ({"learning_rate": 0}, "learning_rate=0"),
        ({"l2_weight": -1}, "l2_weight=-1"),
        ({"tv_weight": "a"}, "tv_weight='a'"),
        ({"jitter": -2}, "jitter=-2"),
        ({"blur_every": 0}, "blur_every=0"),
        ({"value_range": (1, 0)}, "value_range="),
        ({"initial": np.zeros((2, 2, 3))}, r"initial with shape \(2, 2, 3\)"),
    ],
)
def test_bad_arguments_raise(pooled_model, kwargs, message):
    arguments = {"classes": [0], "steps": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        activation_maximization(pooled_model, **arguments)


def test_multi_output_model_needs_an_output_choice():
    inputs = keras.Input((SIZE, SIZE, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2)(flat), keras.layers.Dense(2)(flat)])
    with pytest.raises(ValueError, match="outputs=None"):
        activation_maximization(model, [0], steps=2)
