"""The compiled passes: same maps as eager, one trace per kind of call, batched zoom = scipy."""

import gradcam_models
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from gradcam_models import CAM_METHODS, method_id

import gradcam_tf
from gradcam_tf.graph import FlatGraph

TARGETS = [np.array([0, 1, 2, 3]), None, np.eye(4, dtype=np.float32)[[3, 2, 1, 0]]]


def _assert_compiled_equals_eager(compiled, eager, images, layers):
    for normalize in (True, False):
        got = compiled.explain(images, TARGETS, layers=layers, normalize=normalize)
        expected = eager.explain(images, TARGETS, layers=layers, normalize=normalize)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    # One graph for the pass; Score-CAM adds one graph of masked images per output.
    assert compiled.trace_count == (1 if compiled.needs_gradients else 4)
    assert eager.trace_count == 0


@pytest.mark.parametrize("method", CAM_METHODS, ids=method_id)
def test_compiled_maps_equal_eager_maps(multi_exit_model, multi_exit_images, method):
    """Given, predicted and one-hot targets, every method (the hooks run on the graph's
    activations and gradients; Score-CAM's masked passes are compiled too)."""
    kwargs = {"batch_size": 8} if method is gradcam_tf.ScoreCAM else {}
    compiled, eager = (
        method(multi_exit_model, **kwargs),
        method(multi_exit_model, compiled=False, **kwargs),
    )
    _assert_compiled_equals_eager(compiled, eager, multi_exit_images, "auto")


@pytest.mark.parametrize("layers", ["exit1_features", "block1_out"], ids=["taps", "fallback"])
def test_compiled_maps_equal_eager_maps_on_shared_layers(
    multi_exit_model, multi_exit_images, layers
):
    """The tapped shared pass (features read by later blocks) and the separate fallback."""
    cam, eager = (
        gradcam_tf.GradCAM(multi_exit_model),
        gradcam_tf.GradCAM(multi_exit_model, compiled=False),
    )
    layers = [layers, "exit2_features", "exit3_features"]
    _assert_compiled_equals_eager(cam, eager, multi_exit_images, layers)


def test_repeated_calls_trace_once(multi_exit_model, multi_exit_images):
    """Any batch size and any class ids reuse the graph; a loop adds no trace."""
    cam = gradcam_tf.GradCAM(multi_exit_model)
    rng = np.random.default_rng(0)
    for i in range(20):
        batch = 1 + i % 4
        ids = rng.integers(0, 4, batch)
        maps = cam.explain(multi_exit_images[:batch], targets=ids)
        assert [m.shape for m in maps] == [(batch, 16, 16)] * 3
    assert cam.trace_count == 1
    for _ in range(3):
        cam.explain(multi_exit_images)  # predicted classes: another kind of call, one more graph
    assert cam.trace_count == 2
    for _ in range(3):
        cam.explain(multi_exit_images, outputs=1, layers="exit2_features")
    assert cam.trace_count == 3


def test_score_cam_traces_each_output_once(multi_exit_model, multi_exit_images):
    cam = gradcam_tf.ScoreCAM(multi_exit_model, max_channels=2, batch_size=3)
    for batch in (1, 4, 3, 4):  # several row counts of masked multi_exit_images per pass
        cam.explain(multi_exit_images[:batch])
    # One clean pass, and one masked-image graph per output.
    assert cam.trace_count == 1 + 3


def test_no_retracing_warning_for_graphs_traced_once(multi_exit_model, multi_exit_images, caplog):
    """TensorFlow's "frequent retracing" warning counts traces per code object; ours are
    traced once each (7 Score-CAM scoring graphs, several explainers) and must not set it off."""
    with caplog.at_level("WARNING"):
        for _ in range(2):
            gradcam_tf.ScoreCAM(multi_exit_model, max_channels=1).explain(multi_exit_images[:1])
            gradcam_tf.GradCAM(multi_exit_model).explain(multi_exit_images[:1], outputs=0)
    assert "retracing" not in caplog.text


def test_no_replay_after_the_first_call(multi_exit_model, multi_exit_images, monkeypatch):
    """The layer-by-layer Python replay runs while tracing, never again."""
    calls = []
    run = FlatGraph.run

    def counting_run(self, *args, **kwargs):
        calls.append(1)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(FlatGraph, "run", counting_run)
    cam = gradcam_tf.GradCAM(multi_exit_model)
    for _ in range(5):
        cam.explain(multi_exit_images, targets=1)
    assert len(calls) == 1


def test_compiled_pass_follows_the_weights(multi_exit_images):
    """The graph reads the model's variables: new weights, new maps (as eager)."""
    model = gradcam_models.multi_exit_cnn()
    cam = gradcam_tf.GradCAM(model)
    before = cam.explain(multi_exit_images, targets=1, normalize=False)
    dense = model.get_layer("exit2_logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([-kernel, bias])  # Grad-CAM weights change sign: ReLU keeps the other part
    after = cam.explain(multi_exit_images, targets=1, normalize=False)
    expected = gradcam_tf.GradCAM(model, compiled=False).explain(
        multi_exit_images, targets=1, normalize=False
    )
    scale = max(after[1].max(), before[1].max())
    assert scale > 0 and np.abs(after[1] - before[1]).max() > 0.1 * scale
    for a, b in zip(after, expected):
        np.testing.assert_array_equal(a, b)
    assert cam.trace_count == 1


def test_callable_targets_run_eagerly(multi_exit_model, multi_exit_images):
    """A callable sees concrete tensors and may keep them (as explain_with_probabilities)."""
    seen = []

    def score(logits):
        seen.append(logits.numpy())
        return logits[:, 2]

    cam = gradcam_tf.GradCAM(multi_exit_model)
    got = cam.explain(multi_exit_images, targets=score)
    expected = cam.explain(multi_exit_images, targets=2)
    assert len(seen) == 3 and seen[0].shape == (4, 4)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert cam.trace_count == 1  # only the class-id call was traced


def _zoom_shapes():
    shapes = [(2, 2, 32, 32), (4, 4, 32, 32), (7, 7, 224, 224), (1, 4, 16, 16), (1, 1, 5, 5)]
    shapes += [(12, 12, 88, 88), (10, 12, 116, 88), (15, 14, 101, 22), (5, 3, 16, 16)]
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(1, 20, 2)
        big_h, big_w = rng.integers(2, 120, 2)
        shapes.append((int(h), int(w), int(big_h), int(big_w)))
    return shapes


@pytest.mark.parametrize("mode", ["constant", "nearest"])
def test_zoom_maps_is_scipy_zoom_bit_for_bit(mode):
    """Including the sizes where scipy's last row comes out 0 in constant mode (12 -> 88)."""
    rng = np.random.default_rng(1)
    for h, w, big_h, big_w in _zoom_shapes():
        maps = (10 * rng.standard_normal((5, h, w))).astype(np.float32)
        expected = scipy.ndimage.zoom(maps, (1, big_h / h, big_w / w), order=1, mode=mode)
        got = gradcam_tf.postprocess.zoom_maps(maps, (big_h, big_w), mode=mode)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=f"{(h, w, big_h, big_w)}")
    edge = scipy.ndimage.zoom(np.ones((1, 12, 12), np.float32), (1, 88 / 12, 88 / 12), order=1)
    assert edge[0, -1].max() == 0.0  # scipy's own rounding artefact, reproduced above


def test_zoom_maps_in_chunks(monkeypatch):
    maps = np.random.default_rng(2).random((37, 3, 5)).astype(np.float32)
    whole = gradcam_tf.postprocess.zoom_maps(maps, (31, 17))
    monkeypatch.setattr(gradcam_tf.postprocess, "_ZOOM_CHUNK", 31 * 17 * 4)  # 4 maps per chunk
    np.testing.assert_array_equal(gradcam_tf.postprocess.zoom_maps(maps, (31, 17)), whole)
    np.testing.assert_array_equal(whole, scipy.ndimage.zoom(maps, (1, 31 / 3, 17 / 5), order=1))


def test_tensor_images_and_float64_arrays(multi_exit_model, multi_exit_images):
    cam = gradcam_tf.GradCAM(multi_exit_model)
    expected = cam.explain(multi_exit_images, targets=1)
    for given in (tf.constant(multi_exit_images), multi_exit_images.astype(np.float64)):
        for a, b in zip(cam.explain(given, targets=1), expected):
            np.testing.assert_array_equal(a, b)
    assert cam.trace_count == 1


def test_maps_and_probabilities_come_from_the_explain_graph(multi_exit_model, multi_exit_images):
    """`explain_with_probabilities` = `explain` plus each chosen output's softmax, from the same
    traced pass (no second graph, no second forward pass), compiled or eager."""
    ids = np.array([0, 1, 2, 3])
    logits = multi_exit_model.predict_on_batch(multi_exit_images)
    for compiled in (True, False):
        cam = gradcam_tf.GradCAM(multi_exit_model, compiled=compiled)
        maps, probs = cam.explain_with_probabilities(multi_exit_images, ids, outputs=[2, 0])
        expected = cam.explain(multi_exit_images, ids, outputs=[2, 0])
        assert cam.trace_count == int(compiled)
        for got, want in zip(maps, expected):
            np.testing.assert_array_equal(got, want)
        for got, k in zip(probs, (2, 0)):
            assert got.dtype == np.float32 and got.shape == (4, 4)
            np.testing.assert_allclose(got, tf.nn.softmax(logits[k]).numpy(), atol=1e-6)


@pytest.mark.parametrize("final", ["dense", "activation_layer"])
def test_probabilities_are_the_models_own_softmax_output(tiny_images, final):
    """For a model ending in a softmax, the probabilities are its output, whatever `score_on`
    the maps are scored on; Score-CAM (no gradients) gives them too, and the saliency methods
    (SmoothGrad: on the clean images, not the noisy copies)."""
    model = gradcam_models.tiny_cnn(
        final_activation="softmax", separate_activation=final == "activation_layer"
    )
    expected = model.predict_on_batch(tiny_images)
    for explainer in (
        gradcam_tf.GradCAM(model),
        gradcam_tf.GradCAM(model, score_on="probabilities"),
        gradcam_tf.ScoreCAM(model, max_channels=2),
        gradcam_tf.Saliency(model),
        gradcam_tf.SmoothGrad(model, samples=2, noise=0.5, seed=0),
    ):
        (maps,), (probs,) = explainer.explain_with_probabilities(tiny_images, targets=[0, 1, 2])
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        np.testing.assert_array_equal(maps, explainer.explain(tiny_images, targets=[0, 1, 2])[0])
