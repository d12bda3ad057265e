"""`msdnet_tf.lite`: the TFLite export run by parallel interpreters on sub-batches."""

import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf.export import tflite_probabilities, to_tflite
from msdnet_tf.lite import LiteClassifier, interpreter


@pytest.fixture(scope="module")
def content(testing_model):
    return to_tflite(testing_model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).normal(size=(37, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("workers, sub_batch", [(1, 64), (2, 8), (3, 5), (2, 1)])
def test_equals_one_interpreter_and_keras(testing_model, content, images, workers, sub_batch):
    classifier = LiteClassifier(content, workers=workers, sub_batch=sub_batch)
    probs = classifier(images)
    whole = tflite_probabilities(content, images)
    keras_probs = np.stack([tf.nn.softmax(o).numpy() for o in testing_model(images)])
    assert probs.shape == (3, 37, 10) and probs.dtype == np.float32
    # Every image is computed alone (per-image ops only): sub-batching changes nothing but
    # XNNPACK's blocking, i.e. float32 round-off.
    np.testing.assert_allclose(probs, whole, atol=2e-6)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-5)
    np.testing.assert_array_equal(classifier.predict(images), probs.argmax(-1))


def test_order_is_kept_when_images_differ_in_every_chunk(content, images):
    """Each image's output must land at its own row, whatever worker ran its chunk."""
    classifier = LiteClassifier(content, workers=3, sub_batch=4)
    probs = classifier(images)
    for i in (0, 5, 17, 36):
        alone = classifier(images[i : i + 1])
        np.testing.assert_allclose(probs[:, i], alone[:, 0], atol=2e-6)
    assert classifier(images[:0]).shape == (3, 0, 10)


def test_reads_a_file_and_reports_attributes(content, tmp_path, images):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    classifier = LiteClassifier(str(path), workers=2)
    assert (classifier.num_exits, classifier.image_shape, classifier.num_classes) == (
        3, (16, 16, 3), 10,
    )  # fmt: skip
    np.testing.assert_allclose(classifier(images[:3]), LiteClassifier(content)(images[:3]))


def test_integer_images_are_converted(content):
    pixels = np.random.default_rng(0).integers(0, 3, size=(2, 16, 16, 3))
    classifier = LiteClassifier(content, workers=1)
    np.testing.assert_allclose(classifier(pixels), classifier(pixels.astype("float32")))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 0}, r"`workers` must be a positive integer. Received: 0"),
        ({"sub_batch": 2.5}, r"`sub_batch` must be a positive integer. Received: 2.5"),
        ({"workers": True}, r"`workers` must be a positive integer. Received: True"),
    ],
)
def test_bad_settings_are_rejected(content, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LiteClassifier(content, **kwargs)


def test_bad_images_are_rejected(content):
    classifier = LiteClassifier(content, workers=1)
    expected = r"must be \(N, 16, 16, 3\). Received: shape \(16, 16, 3\)"
    with pytest.raises(ValueError, match=expected):
        classifier(np.zeros((16, 16, 3), "float32"))
    with pytest.raises(ValueError, match=r"Received: shape \(2, 32, 32, 3\)"):
        classifier(np.zeros((2, 32, 32, 3), "float32"))
    with pytest.raises(ValueError, match=r"must be finite. Received: NaN"):
        classifier(np.full((1, 16, 16, 3), np.nan, "float32"))
    with pytest.raises(ValueError, match=r"must be numbers. Received: dtype <U1"):
        classifier(np.full((1, 16, 16, 3), "a"))


def test_missing_or_corrupt_files_are_reported(tmp_path, content):
    with pytest.raises(FileNotFoundError, match=r"No TFLite file at .*absent.tflite"):
        LiteClassifier(str(tmp_path / "absent.tflite"))
    with pytest.raises(ValueError, match=r"`content` is not a TFLite model \(9 bytes"):
        LiteClassifier(b"not a fb!")
    with pytest.raises(ValueError, match=r"`num_threads` must be a positive integer"):
        interpreter(content, num_threads=0)


def test_a_flatbuffer_of_another_model_is_rejected(tmp_path):
    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2 * x}

    module = Double()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    with pytest.raises(ValueError, match=r"Received: inputs \['x'\], outputs \['y'\]"):
        LiteClassifier(converter.convert())
