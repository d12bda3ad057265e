"""Grad-CAM pages of a run and the Grad-CAM-over-epochs callback."""

import os
import re

import numpy as np
import pytest
from PIL import Image

import gradcam_tf
from msdnet_tf import evaluation, training, visualize
from msdnet_tf.config import base_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.steps_per_epoch = 3
    config.gradcam.every_n_epochs = 1
    config.gradcam.num_images = 2
    training.train_and_evaluate(config, str(workdir))
    return str(workdir)


def test_training_callback_writes_one_frame_per_epoch_and_a_gif(run):
    folder = os.path.join(run, "gradcam_epochs")
    gifs = sorted(f for f in os.listdir(folder) if f.endswith(".gif"))
    frames = sorted(os.listdir(os.path.join(folder, "frames")))
    assert len(gifs) == 2 and len(frames) == 2 * 2
    for gif in gifs:
        image_id = gif[len("img") : -len(".gif")]
        assert [f for f in frames if f.startswith(f"img{image_id}_")] == [
            f"img{image_id}_epoch001.png", f"img{image_id}_epoch002.png"]  # fmt: skip
        with Image.open(os.path.join(folder, gif)) as animation:
            assert animation.n_frames == 2
    assert os.listdir(os.path.join(run, "tensorboard", "gradcam"))


def test_visualize_run_writes_every_page(run, tmp_path):
    pages = visualize.visualize_run(run, str(tmp_path), n=3, order="hardest")
    cams = sorted(os.listdir(tmp_path / "cams"))
    assert len(cams) == 3 * 3 and all(re.match(r"img\d{5}_exit[123]\.png$", c) for c in cams)
    for key in ("grid", "class", "index"):
        assert os.path.getsize(pages[key]) > 1000
    assert len(pages["animations"]) == 2
    html = (tmp_path / "index.html").read_text()
    for link in re.findall(r"src='([^']+)'", html):
        assert (tmp_path / link).exists(), link
    with Image.open(pages["grid"]) as grid:
        assert grid.size[0] > grid.size[1] / 3  # one column per exit plus the image


def test_row_labels_match_the_evaluation_difficulty(run, tmp_path):
    model, _, splits = visualize.load_run(run)
    table, _ = evaluation.read_difficulty_csv(os.path.join(run, "difficulty.csv"))
    chosen = visualize.select_images(splits.test_y, splits.class_names, table.n_correct, n=4)
    result = visualize.exit_grid(model, splits, chosen, str(tmp_path), per_image_files=False)
    np.testing.assert_array_equal(result["n_correct"], np.asarray(table.n_correct)[chosen])
    for label, count in zip(result["rows"], result["n_correct"]):
        assert label.endswith(f"({count}/3)")
    # hardest first
    assert list(result["n_correct"]) == sorted(result["n_correct"])


def test_overlay_hottest_pixel_lies_where_the_cam_peaks():
    cam = np.zeros((8, 8), np.float32)
    cam[5, 2] = 1.0
    picture = gradcam_tf.overlay(np.zeros((32, 32, 3), np.float32), cam, alpha=1.0)
    red = picture[..., 0].astype(int) - picture[..., 2].astype(int)
    y, x = np.unravel_index(red.argmax(), red.shape)
    assert abs(y - (5 + 0.5) * 4) <= 4 and abs(x - (2 + 0.5) * 4) <= 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(class_name="cat"), r"Unknown class name.*'9'.*Received: 'cat'"),
        (dict(indices=[0, 10000]), r"\[0, 450\).*Received: \[10000\]"),
        (dict(order="random"), r"hardest, easiest or first"),
    ],
)
def test_bad_selection_arguments(kwargs, message):
    from msdnet_tf.data import load_digits

    splits = load_digits()
    with pytest.raises(ValueError, match=message):
        visualize.select_images(splits.test_y, splits.class_names, **kwargs)


def test_missing_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras is missing"):
        visualize.visualize_run(str(tmp_path / "nothing"))
