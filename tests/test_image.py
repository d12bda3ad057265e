"""Overlays, value conversions, grids and PNG files."""

import cv2
import numpy as np
import pytest
from matplotlib.figure import Figure

from gradcam_tf import image


def _checker(size: int = 16) -> np.ndarray:
    """A float RGB test image: red left half, blue right half."""
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[:, : size // 2, 0] = 1.0
    rgb[:, size // 2 :, 2] = 1.0
    return rgb


def test_to_uint8_and_to_float_round_trip():
    values = np.array([0.0, 0.5, 1.0], np.float32)
    assert image.to_uint8(values).tolist() == [0, 128, 255]
    assert image.to_uint8(np.array([7], np.uint8)).tolist() == [7]
    every = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(image.to_uint8(image.to_float(every)), every)


def test_denormalize_inverts_normalisation_and_clips():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    normalised = (pixels - mean) / std
    np.testing.assert_allclose(image.denormalize(normalised, mean, std), pixels, atol=1e-6)
    assert image.denormalize(np.full((1, 1, 1, 3), 10.0), 0.5, 0.5).max() == 1.0
    assert image.denormalize(np.full((1, 1, 1, 3), -10.0), 0.5, 0.5).min() == 0.0


def test_overlay_blends_with_the_colormap():
    rgb = _checker()
    cam = np.zeros((16, 16), np.float32)
    cam[:8, :8] = 1.0
    out = image.overlay(rgb, cam, alpha=0.5, output_dtype="float32")
    heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)[..., ::-1] / 255.0
    np.testing.assert_allclose(out, 0.5 * rgb + 0.5 * heat, atol=1e-6)
    assert out.dtype == np.float32
    # uint8 output, alpha 0 is the image itself, alpha 1 the heat map itself.
    as_uint8 = image.overlay(rgb, cam, alpha=0.0)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, image.to_uint8(rgb))
    np.testing.assert_array_equal(image.overlay(rgb, cam, alpha=1.0), np.uint8(heat * 255 + 0.5))


def test_overlay_channel_order_grey_and_resize():
    rgb = image.to_uint8(_checker())
    cam = np.linspace(0, 1, 16, dtype=np.float32)[None].repeat(16, 0)
    from_bgr = image.overlay(rgb[..., ::-1], cam, channel_order="bgr")
    np.testing.assert_array_equal(from_bgr, image.overlay(rgb, cam))
    grey = image.overlay(np.full((16, 16), 0.5, np.float32), cam, colormap="viridis")
    assert grey.shape == (16, 16, 3)
    # A 4x4 map is resized to the 16x16 image.
    small = image.overlay(rgb, np.ones((4, 4), np.float32), colormap=cv2.COLORMAP_TURBO)
    full = image.overlay(rgb, np.ones((16, 16), np.float32), colormap="turbo")
    np.testing.assert_array_equal(small, full)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros((2, 16, 16, 3), np.float32), np.zeros((16, 16))), {}, r"\(2, 16, 16, 3\)"),
        ((np.zeros((16, 16, 3), np.int32), np.zeros((16, 16))), {}, "dtype int32"),
        ((np.full((16, 16, 3), 2.0), np.zeros((16, 16))), {}, "denormalize"),
        ((np.zeros((16, 16, 3)), np.zeros((2, 16, 16))), {}, r"cam with shape \(2, 16, 16\)"),
        ((np.zeros((16, 16, 3)), np.full((16, 16), 1.5)), {}, r"\[1.5, 1.5\]"),
        ((np.zeros((16, 16, 3)), np.zeros((16, 16))), {"alpha": 2}, "alpha=2"),
        ((np.zeros((16, 16, 3)), np.zeros((16, 16))), {"colormap": "nope"}, "'nope'"),
        ((np.zeros((16, 16, 3)), np.zeros((16, 16))), {"channel_order": "hsv"}, "'hsv'"),
    ],
)
def test_overlay_bad_inputs(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        image.overlay(*args, **kwargs)


def test_denormalize_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        image.denormalize(np.zeros((1, 2, 2, 3)), [0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match="std"):
        image.denormalize(np.zeros((1, 2, 2, 3)), 0.5, 0.0)
    with pytest.raises(ValueError, match="dtype uint8"):
        image.denormalize(np.zeros((1, 2, 2, 3), np.uint8), 0.5, 1.0)


def test_save_png_round_trip(tmp_path):
    rgb = image.to_uint8(_checker())
    path = image.save_png(tmp_path / "sub" / "x.png", rgb)
    np.testing.assert_array_equal(cv2.imread(path)[..., ::-1], rgb)  # written as RGB
    with pytest.raises(ValueError, match="dtype float32"):
        image.save_png(tmp_path / "y.png", _checker())
    with pytest.raises(ValueError, match="'.png'"):
        image.save_png(tmp_path / "y.jpg", rgb)


def test_plot_grid_layout_and_file(tmp_path):
    images = np.stack([_checker(), _checker()[::-1]])
    cams = np.random.default_rng(1).uniform(size=(2, 3, 4, 4)).astype(np.float32)
    path = tmp_path / "grid.png"
    figure = image.plot_grid(
        images,
        cams,
        row_labels=["dog", "cat"],
        col_labels=["exit 1", "exit 2", "exit 3"],
        cell_titles=[["a", "b", "c"], ["d", "e", "f"]],
        cell_colors=[["green", None, "red"], [None, None, None]],
        path=path,
    )
    assert isinstance(figure, Figure)
    axes = figure.axes
    assert len(axes) == 2 * 4  # image column + three maps per row
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in axes)
    assert axes[0].get_ylabel() == "dog" and axes[4].get_ylabel() == "cat"
    assert axes[1].get_title() == "exit 1\na" and axes[5].get_title() == "d"
    assert axes[1].spines["left"].get_visible() and not axes[2].spines["left"].get_visible()
    saved = cv2.imread(str(path))
    assert saved is not None and saved.shape[0] > 0


def test_plot_grid_single_column_and_bad_labels():
    images = np.zeros((2, 8, 8), np.uint8)
    figure = image.plot_grid(images, np.zeros((2, 8, 8)), show_image=False)
    assert len(figure.axes) == 2
    with pytest.raises(ValueError, match="row_labels"):
        image.plot_grid(images, np.zeros((2, 8, 8)), row_labels=["one"])
    with pytest.raises(ValueError, match=r"cams with shape \(3, 8, 8\)"):
        image.plot_grid(images, np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="cell_colors"):
        image.plot_grid(images, np.zeros((2, 8, 8)), cell_colors=[["red"], ["red", "blue"]])
