"""Displaying explanations: colormap overlays (OpenCV), figure grids (matplotlib), PNG files.

Conventions:

* Images are (H, W, 3) colour or (H, W) / (H, W, 1) grey, either float in [0, 1] or uint8 in
  [0, 255]. Colour images are RGB unless ``channel_order="bgr"`` is passed (OpenCV's order).
* Maps ("cams") are (h, w) floats in [0, 1]; they are resized to the image when sizes differ.
* Every function returns RGB. `overlay` returns uint8 by default, float32 in [0, 1] on request.

Figures are built with `matplotlib.figure.Figure` directly, not `pyplot`, so nothing is shown
or kept alive by a global figure manager and no GUI backend is needed.

Example:
    >>> rgb = denormalize(batch, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    >>> save_png("cam.png", overlay(rgb[0], cams[0]))
    >>> plot_grid(rgb, cams, col_labels=["exit 1", "exit 2"], path="grid.png")
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "colormap_names",
    "denormalize",
    "overlay",
    "plot_grid",
    "save_png",
    "to_float",
    "to_uint8",
]

_CHANNEL_ORDERS = ("rgb", "bgr")
_OUTPUT_DTYPES = ("uint8", "float32")
_RANGE_TOLERANCE = 1e-4


def colormap_names() -> list[str]:
    """Names accepted by ``colormap=`` (OpenCV's ``cv2.COLORMAP_*``, lower case)."""
    return sorted(
        name[len("COLORMAP_") :].lower() for name in dir(cv2) if name.startswith("COLORMAP_")
    )


def _colormap_id(colormap: str | int) -> int:
    if isinstance(colormap, str):
        constant = getattr(cv2, "COLORMAP_" + colormap.upper(), None)
        if constant is None:
            raise ValueError(
                f"Unknown colormap; expected one of {colormap_names()} or a cv2.COLORMAP_* "
                f"constant. Received: colormap={colormap!r}"
            )
        return int(constant)
    valid = {int(getattr(cv2, name)) for name in dir(cv2) if name.startswith("COLORMAP_")}
    if (
        isinstance(colormap, bool)
        or not isinstance(colormap, int | np.integer)
        or colormap not in valid
    ):
        raise ValueError(
            f"`colormap` must be a name from {colormap_names()} or a cv2.COLORMAP_* constant. "
            f"Received: colormap={colormap!r}"
        )
    return int(colormap)


# --------------------------------------------------------------------------------------------
# Value conversions
# --------------------------------------------------------------------------------------------


def _check_pixel_dtype(array: np.ndarray, name: str) -> None:
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"`{name}` must be float in [0, 1] or uint8 in [0, 255]. Received: dtype {array.dtype}"
        )


def _check_unit_range(array: np.ndarray, name: str) -> None:
    if array.size == 0:
        return
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite. Received: values containing NaN or inf")
    low, high = float(array.min()), float(array.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"Float `{name}` must be in [0, 1] (use `denormalize` for normalised model inputs). "
            f"Received: values in [{low:.4g}, {high:.4g}]"
        )


def to_float(images) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] pixels -> float32 in [0, 1] (any shape).

    Raises:
        ValueError: for other dtypes or floats outside [0, 1].
    """
    array = np.asarray(images)
    _check_pixel_dtype(array, "images")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    _check_unit_range(array, "images")
    return np.clip(array, 0.0, 1.0).astype(np.float32)


def to_uint8(images) -> np.ndarray:
    """Float [0, 1] pixels -> uint8 [0, 255] by rounding (uint8 passes through; any shape).

    ``round(255 * x)`` maps 0 -> 0, 1 -> 255 and 0.5 -> 128.

    Raises:
        ValueError: for other dtypes or floats outside [0, 1].
    """
    array = np.asarray(images)
    _check_pixel_dtype(array, "images")
    if array.dtype == np.uint8:
        return array
    _check_unit_range(array, "images")
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def denormalize(images, mean, std) -> np.ndarray:
    """Undoes the model-input normalisation ``x = (pixel - mean) / std`` for display.

    ``pixel = x * std + mean``, clipped to [0, 1] (so mean and std must be those of pixels in
    [0, 1], as torchvision and most data pipelines state them).

    Args:
        images: float array (..., C), e.g. (B, H, W, C) or (H, W, C).
        mean: a number or C per-channel values.
        std: a number or C per-channel values, all > 0.

    Returns:
        float32 array of the same shape, in [0, 1].
    """
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"`images` must be float (normalised model inputs). Received: dtype {array.dtype}"
        )
    if array.ndim < 1:
        raise ValueError(f"`images` must have a channel axis. Received: shape {array.shape}")
    mean_array = np.asarray(mean, dtype=np.float64)
    std_array = np.asarray(std, dtype=np.float64)
    channels = array.shape[-1]
    for name, values in (("mean", mean_array), ("std", std_array)):
        if values.ndim > 1 or (values.ndim == 1 and values.shape[0] not in (1, channels)):
            raise ValueError(
                f"`{name}` must be a number or {channels} per-channel values (images have "
                f"{channels} channels). Received: {name} with shape {values.shape}"
            )
    if np.any(std_array <= 0):
        raise ValueError(f"`std` must be > 0. Received: std={std!r}")
    pixels = array.astype(np.float64) * std_array + mean_array
    return np.clip(pixels, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------------


def _check_channel_order(channel_order: str) -> None:
    if channel_order not in _CHANNEL_ORDERS:
        raise ValueError(
            f"`channel_order` must be one of {_CHANNEL_ORDERS}. Received: "
            f"channel_order={channel_order!r}"
        )


def _rgb_float(image, channel_order: str) -> np.ndarray:
    """One image as float32 RGB (H, W, 3) in [0, 1]."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            "`image` must be one image (H, W, 3), (H, W, 1) or (H, W). Received: image with "
            f"shape {np.shape(image)}"
        )
    rgb = to_float(array)
    return rgb[..., ::-1] if channel_order == "bgr" else rgb


def _check_cam(cam) -> np.ndarray:
    array = np.asarray(cam)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"`cam` must be one map (h, w). Received: cam with shape {np.shape(cam)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"`cam` must be float in [0, 1]. Received: dtype {array.dtype}")
    _check_unit_range(array, "cam")
    return np.clip(array, 0.0, 1.0).astype(np.float32)


def _heatmap(cam: np.ndarray, size: tuple[int, int], colormap: int) -> np.ndarray:
    """A (h, w) map in [0, 1] -> RGB float32 heat map (H, W, 3) at ``size`` = (H, W)."""
    if cam.shape != size:
        # cv2.resize takes (width, height); bilinear, as for the CAMs themselves.
        cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        cam = np.clip(cam, 0.0, 1.0)
    colored = cv2.applyColorMap(to_uint8(cam), colormap)  # BGR uint8
    return cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def overlay(
    image,
    cam,
    alpha: float = 0.4,
    colormap: str | int = "jet",
    *,
    channel_order: str = "rgb",
    output_dtype: str = "uint8",
) -> np.ndarray:
    """Blends a colour-mapped explanation map over an image.

        out = (1 - alpha) * image + alpha * colormap(cam)

    computed in float on [0, 1], so the result is always a valid image. The map is resized to
    the image with bilinear interpolation when the sizes differ.

    Args:
        image: (H, W, 3) colour or (H, W) / (H, W, 1) grey image, float in [0, 1] or uint8.
        cam: (h, w) map, float in [0, 1] (e.g. a min-max normalised CAM).
        alpha: weight of the heat map, in [0, 1] (0 = the image, 1 = the heat map only).
        colormap: an OpenCV colormap name ("jet", "turbo", "viridis", "inferno", ...; see
            `colormap_names`) or a ``cv2.COLORMAP_*`` constant.
        channel_order: "rgb" (default) or "bgr" (an image read by ``cv2.imread``).
        output_dtype: "uint8" (default, [0, 255]) or "float32" ([0, 1]).

    Returns:
        (H, W, 3) RGB image, whatever ``channel_order`` was.

    Raises:
        ValueError: on a bad shape, dtype, value range, alpha or colormap.
    """
    _check_channel_order(channel_order)
    if output_dtype not in _OUTPUT_DTYPES:
        raise ValueError(
            f"`output_dtype` must be one of {_OUTPUT_DTYPES}. Received: "
            f"output_dtype={output_dtype!r}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}")
    colormap_id = _colormap_id(colormap)
    rgb = _rgb_float(image, channel_order)
    heat = _heatmap(_check_cam(cam), rgb.shape[:2], colormap_id)
    blended = np.clip((1.0 - alpha) * rgb + alpha * heat, 0.0, 1.0).astype(np.float32)
    return to_uint8(blended) if output_dtype == "uint8" else blended


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _check_png_path(path) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end in '.png'. Received: path={path!r}")
    return path


def _make_parent(path: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)


def save_png(path: str | os.PathLike, rgb_uint8) -> str:
    """Writes an RGB (H, W, 3) or grey (H, W) uint8 image as a PNG file.

    Parent directories are created. OpenCV writes BGR, so the channels are swapped here.

    Args:
        path: destination, must end in ".png".
        rgb_uint8: the image, uint8.

    Returns:
        The path written, as a string.
    """
    path = _check_png_path(path)
    array = np.asarray(rgb_uint8)
    if array.dtype != np.uint8:
        raise ValueError(
            "`rgb_uint8` must be uint8 (use `to_uint8` for float images). Received: dtype "
            f"{array.dtype}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(
            f"`rgb_uint8` must be (H, W, 3) or (H, W). Received: shape {np.shape(rgb_uint8)}"
        )
    _make_parent(path)
    bgr = array if array.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, bgr):
        raise OSError(f"OpenCV could not write the PNG file. Received: path={path!r}")
    return path


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


def _check_labels(labels, count: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or len(labels) != count:
        raise ValueError(f"`{name}` must be a list of {count} strings. Received: {name}={labels!r}")
    return [str(label) for label in labels]


def _check_cells(cells, rows: int, cols: int, name: str) -> list[list] | None:
    if cells is None:
        return None
    shape_ok = not isinstance(cells, str) and len(cells) == rows
    shape_ok = shape_ok and all(not isinstance(row, str) and len(row) == cols for row in cells)
    if not shape_ok:
        raise ValueError(
            f"`{name}` must be {rows} rows of {cols} entries (one per map). Received: {name}="
            f"{cells!r}"
        )
    return [list(row) for row in cells]


def _grid_inputs(images, cams) -> tuple[np.ndarray, np.ndarray]:
    """Checks the grid's images (R, H, W[, C]) and cams (R, K, h, w) or (R, h, w)."""
    image_array = np.asarray(images)
    if image_array.ndim not in (3, 4):
        raise ValueError(
            "`images` must be a batch (R, H, W, C) or (R, H, W), one image per row. Received: "
            f"images with shape {image_array.shape}"
        )
    cam_array = np.asarray(cams)
    if cam_array.ndim == 3:
        cam_array = cam_array[:, None]
    if cam_array.ndim != 4 or cam_array.shape[0] != image_array.shape[0]:
        raise ValueError(
            f"`cams` must be (R, K, h, w) (K maps per image) or (R, h, w), with R = "
            f"{image_array.shape[0]} images. Received: cams with shape {np.shape(cams)}"
        )
    return image_array, cam_array


def plot_grid(
    images,
    cams,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_titles: Sequence[Sequence[str]] | None = None,
    cell_colors: Sequence[Sequence] | None = None,
    path: str | os.PathLike | None = None,
    *,
    show_image: bool = True,
    image_label: str = "image",
    alpha: float = 0.4,
    colormap: str | int = "jet",
    channel_order: str = "rgb",
    cell_size: float = 1.6,
    dpi: int = 120,
) -> Figure:
    """A grid of overlays: one row per image, one column per map (method, exit, layer...).

    Row r shows ``images[r]`` (first column, if ``show_image``) and then the overlay of each of
    its K maps ``cams[r, k]``.

    Args:
        images: (R, H, W, 3) or (R, H, W) display images, float in [0, 1] or uint8 (use
            `denormalize` first for normalised model inputs).
        cams: (R, K, h, w) maps in [0, 1], or (R, h, w) for a single column.
        row_labels: R labels written left of each row.
        col_labels: K labels written above the map columns (the image column is titled
            ``image_label``).
        cell_titles: R x K small titles above the maps (e.g. "cat 0.93"); they replace the
            column label in rows after the first.
        cell_colors: R x K matplotlib colours (or None) for each map's frame and title, e.g.
            green for a correct prediction and red for a wrong one.
        path: if given, the figure is also saved there as a PNG (parent folders created).
        show_image: add the plain image as the first column.
        image_label: title of the image column.
        alpha: overlay weight of the heat maps (see `overlay`).
        colormap: OpenCV colormap name or constant (see `overlay`).
        channel_order: "rgb" or "bgr" for ``images``.
        cell_size: size of one cell in inches.
        dpi: resolution of the saved PNG.

    Returns:
        The `matplotlib.figure.Figure` (not registered with pyplot; display it in a notebook by
        leaving it as the cell's value).
    """
    path = None if path is None else _check_png_path(path)
    image_array, cam_array = _grid_inputs(images, cams)
    rows, cols = cam_array.shape[:2]
    row_labels = _check_labels(row_labels, rows, "row_labels")
    col_labels = _check_labels(col_labels, cols, "col_labels")
    cell_titles = _check_cells(cell_titles, rows, cols, "cell_titles")
    cell_colors = _check_cells(cell_colors, rows, cols, "cell_colors")
    _check_channel_order(channel_order)

    offset = 1 if show_image else 0
    figure = Figure(figsize=(cell_size * (cols + offset), cell_size * rows), dpi=dpi)
    axes = figure.subplots(rows, cols + offset, squeeze=False)
    for r in range(rows):
        image_rgb = to_uint8(_rgb_float(image_array[r], channel_order))
        if show_image:
            axes[r, 0].imshow(image_rgb)
            if r == 0:
                axes[r, 0].set_title(image_label, fontsize=8)
        for k in range(cols):
            ax = axes[r, k + offset]
            ax.imshow(overlay(image_rgb, cam_array[r, k], alpha=alpha, colormap=colormap))
            title = None
            if cell_titles is not None:
                title = str(cell_titles[r][k])
                if r == 0 and col_labels is not None:
                    title = f"{col_labels[k]}\n{title}"
            elif r == 0 and col_labels is not None:
                title = col_labels[k]
            color = cell_colors[r][k] if cell_colors is not None else None
            if title is not None:
                ax.set_title(title, fontsize=7, color=color or "black")
            if color is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(2.0)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    for ax, color in _frame_colors(axes, cell_colors, offset):
        ax.set_xticks([])
        ax.set_yticks([])
        if color is None:
            for spine in ax.spines.values():
                spine.set_visible(False)
    figure.tight_layout(pad=0.3)
    if path is not None:
        _make_parent(path)
        figure.savefig(path, dpi=dpi)
    return figure


def _frame_colors(axes, cell_colors, offset: int):
    """(axis, frame colour or None) for every cell of the grid."""
    for r, row in enumerate(axes):
        for c, ax in enumerate(row):
            k = c - offset
            color = cell_colors[r][k] if cell_colors is not None and k >= 0 else None
            yield ax, color
