"""gradcam_tf.callbacks: Grad-CAM frames during training, GIFs, TensorBoard, the compiled pass."""

import json
import os

import gradcam_models
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gradcam_tf import GradCAM
from gradcam_tf.callbacks import GradCAMCallback, frames_to_gif

CLASS_NAMES = ["zero", "one", "two", "three"]


def _compiled_model():
    model = gradcam_models.multi_exit_cnn()
    losses = {
        n: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for n in model.output_names
    }
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=losses)
    return model


def _data(count=16, seed=0):
    x = np.clip(gradcam_models.images(count, seed=seed), 0.0, 1.0)  # displayable as they are
    y = np.arange(count) % len(CLASS_NAMES)
    return x, y


def _fit(model, callback, epochs, initial_epoch=0):
    x, y = _data()
    model.fit(
        x,
        {n: y for n in model.output_names},
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=8,
        verbose=0,
        callbacks=[callback],
    )


def _callback(tmp_path, **kwargs):
    x, y = _data()
    options = dict(
        out_dir=str(tmp_path / "cams"),
        tensorboard_dir=str(tmp_path / "tb"),
        image_ids=[3, 7],
        verbose=False,
    )
    options.update(kwargs)
    return GradCAMCallback(x[[3, 7]], y[[3, 7]], CLASS_NAMES, **options)


def _gif_frames(path) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


def test_one_frame_per_epoch_and_a_gif_that_decodes(tmp_path):
    callback = _callback(tmp_path)
    _fit(_compiled_model(), callback, epochs=3)
    frames = sorted(os.listdir(tmp_path / "cams" / "frames"))
    expected = [f"img{i:05d}_epoch{e:03d}.png" for i in (3, 7) for e in (1, 2, 3)]
    assert frames == expected
    sizes = set()
    for name in frames:
        with Image.open(tmp_path / "cams" / "frames" / name) as frame:
            sizes.add(frame.size)
    assert len(sizes) == 1  # every frame of every epoch has one size: the GIF does not jump
    assert callback.gif_paths == [str(tmp_path / "cams" / f"img{i:05d}.gif") for i in (3, 7)]
    for path in callback.gif_paths:
        assert _gif_frames(path) == 3
    with Image.open(callback.gif_paths[0]) as gif:
        assert gif.info["loop"] == 0 and gif.size == sizes.pop()


def test_timing_is_recorded_for_every_epoch(tmp_path):
    callback = _callback(tmp_path)
    _fit(_compiled_model(), callback, epochs=2)
    with open(tmp_path / "cams" / "timing.json") as f:
        timing = json.load(f)
    assert [r["epoch"] for r in timing["epochs"]] == [1, 2]
    assert all(r["epoch_seconds"] > 0 and r["callback_seconds"] > 0 for r in timing["epochs"])
    assert timing["explained_epochs"] == 2
    assert timing["fraction_of_training"] == pytest.approx(
        timing["callback_seconds"] / sum(r["epoch_seconds"] for r in timing["epochs"])
    )


def test_tensorboard_gets_one_image_summary_per_epoch(tmp_path):
    from tensorboard.backend.event_processing import plugin_event_accumulator

    _fit(_compiled_model(), _callback(tmp_path), epochs=2)
    events = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tb"), {"tensors": 0})
    events.Reload()
    assert list(events.PluginTagToContent("images")) == ["gradcam/frames"]
    records = events.Tensors("gradcam/frames")
    assert [r.step for r in records] == [1, 2]
    values = tf.make_ndarray(records[0].tensor_proto)
    width, height = int(values[0]), int(values[1])
    assert len(values) == 2 + 2  # width, height, one PNG per image
    with Image.open(tmp_path / "cams" / "frames" / "img00003_epoch001.png") as frame:
        assert (width, height) == frame.size
    assert tf.io.decode_png(values[2]).shape == (height, width, 3)


def test_every_n_epochs_and_the_last_epoch(tmp_path):
    callback = _callback(tmp_path, every_n_epochs=2, tensorboard_dir=None)
    _fit(_compiled_model(), callback, epochs=3)
    frames = sorted(os.listdir(tmp_path / "cams" / "frames"))
    assert frames == [f"img{i:05d}_epoch{e:03d}.png" for i in (3, 7) for e in (2, 3)]
    assert _gif_frames(callback.gif_paths[0]) == 2


def test_a_resumed_run_keeps_the_earlier_frames(tmp_path):
    model = _compiled_model()
    _fit(model, _callback(tmp_path, tensorboard_dir=None), epochs=2)
    resumed = _callback(tmp_path, tensorboard_dir=None)
    _fit(model, resumed, epochs=3, initial_epoch=2)
    assert _gif_frames(resumed.gif_paths[1]) == 3


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("target", ["label", "predicted"])
def test_compute_is_explain_with_probabilities_of_the_chosen_outputs(tmp_path, compiled, target):
    """The callback's one pass: the explainer's public method, labels or top-1 classes."""
    model = gradcam_models.multi_exit_cnn()
    layers = ["exit1_features", "exit3_features"]
    callback = _callback(
        tmp_path, outputs=[0, "exit3_logits"], layers=layers, target=target, compiled=compiled
    )
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.output_names == ["exit1_logits", "exit3_logits"]
    assert callback.output_labels == ["B1", "B3"]
    maps, probs = callback.compute()
    classes = callback.labels if target == "label" else None
    expected = GradCAM(model, compiled=False).explain(
        callback.images, targets=classes, layers=layers, outputs=[0, 2]
    )
    logits = model.predict_on_batch(callback.images)
    for got, want in zip(maps, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for got, k in zip(probs, (0, 2)):
        np.testing.assert_allclose(got, tf.nn.softmax(logits[k]).numpy(), atol=1e-6)
    callback.compute()
    assert callback._explainer.trace_count == (1 if compiled else 0)


def test_frame_highlights_the_true_class_in_green(tmp_path):
    from gradcam_tf import drawing

    callback = _callback(tmp_path, tensorboard_dir=None)
    callback.set_model(gradcam_models.multi_exit_cnn())
    callback.on_train_begin()
    maps, probs = callback.compute()
    frame = callback.render_frame(0, 5, maps, probs)
    green = np.all(frame == np.array(drawing.RIGHT, np.uint8), axis=-1)
    grey = np.all(frame == np.array(drawing.OTHER, np.uint8), axis=-1)
    assert green.any() or grey.any()
    true_class = callback.labels[0]
    in_top3 = [true_class in np.argsort(-p[0])[:3] for p in probs]
    assert green.sum() > 0 if any(in_top3) else True
    assert frame.shape[1] > 3 * 96  # three exits side by side


def test_frames_to_gif_writes_every_frame(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"f{i}.png"
        pixels = np.zeros((10, 20, 3), np.uint8)
        pixels[2:5, 4 * i : 4 * i + 3] = (250, 200, 40)  # a square that moves
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    gif = frames_to_gif(paths, str(tmp_path / "out" / "a.gif"), frame_ms=100)
    assert _gif_frames(gif) == 4
    with pytest.raises(ValueError, match="No frames"):
        frames_to_gif([], str(tmp_path / "b.gif"))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(labels=[0]), r"one class id per image \(2\)"),
        (dict(labels=[0, 7]), r"class ids in \[0, 4\)"),
        (dict(mean=0.5), r"`mean` and `std` go together"),
        (dict(mean=0.5, std=0.2, display_fn=lambda x: x), r"at most one of"),
        (dict(target="logits"), r"`target` must be one of"),
        (dict(every_n_epochs=0), r"every_n_epochs=0"),
        (dict(images=np.zeros((16, 16, 3), np.float32)), r"`images` must be a 4-D batch"),
        (dict(images=np.zeros((0, 16, 16, 3), np.float32)), r"`images` must be a non-empty"),
        (dict(cell_px=0), r"`cell_px` must be a positive int. Received: cell_px=0"),
        (dict(image_ids=[1, 1]), r"2 distinct names"),
    ],
)
def test_bad_arguments(change, message):
    x, y = _data(2)
    args = dict(images=x, labels=y, class_names=CLASS_NAMES)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        GradCAMCallback(**args)


@pytest.mark.parametrize(
    "layer, expected",
    [
        (None, "auto"),
        ("auto", "auto"),
        ("features", ["exit1_features", "exit3_features"]),
        ("conv_out", ["exit1_conv_out", "exit3_conv_out"]),
    ],
)
def test_training_callback_follows_config_gradcam_layer(tmp_path, layer, expected):
    """msdnet_tf's training callback: "auto" by default (on MSD-Net, gradcam_tf's localizing
    rule picks exit{k}_features), or the named endpoints of ``config.gradcam.layer``."""
    import types

    from msdnet_tf.config import base_config
    from msdnet_tf.training.callbacks import gradcam_callback

    config = base_config("testing", "digits", epochs=1, batch_size=8)
    config.gradcam.every_n_epochs, config.gradcam.exits = 1, (1, 3)
    if layer is None:
        assert config.gradcam.layer == "auto"
    else:
        config.gradcam.layer = layer
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    splits = types.SimpleNamespace(
        test_x=x, test_y=np.array([0, 1, 2, 3]), class_names=[str(c) for c in range(10)],
        normalize=lambda images: images,
    )  # fmt: skip
    callback = gradcam_callback(config, splits, 3, str(tmp_path))
    assert callback.layers == expected and callback.outputs == [0, 2]
