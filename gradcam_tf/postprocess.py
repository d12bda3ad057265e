"""Map post-processing shared by every explainer: per-sample min-max normalisation and resize.

The default resize is half-pixel-centred bilinear (``tf.image.resize(..., "bilinear")``, which
for upsampling is OpenCV's ``cv2.resize(INTER_LINEAR)`` and PyTorch's
``interpolate(mode="bilinear", align_corners=False)``, as pytorch-grad-cam): input cell i covers
output pixels whose centre maps to ``(o + 0.5) * h / H - 0.5``, so a map's peak stays over the
image region it describes. `zoom_maps` is ``scipy.ndimage.zoom(maps, (1, H/h, W/w), order=1)``,
the corner-aligned linear zoom tf-keras-vis uses (``resize="zoom"``, for parity with it),
computed batched with NumPy and identical bit for bit: it puts the map's corner cells on the
image's corner pixels, so a 2x2 map always peaks on an image corner.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

__all__ = [
    "EPSILON",
    "RESIZE_MODES",
    "check_resize",
    "finish_maps",
    "finish_maps_tf",
    "normalize_maps",
    "resize_maps",
    "zoom_maps",
]

EPSILON = 1e-7
RESIZE_MODES = ("bilinear", "zoom", None)


def check_resize(resize) -> str | None:
    """Checks a resize mode: one of `RESIZE_MODES`.

    Raises:
        ValueError: ``"`resize` must be one of (...). Received: resize=..."``.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    return resize


def finish_maps(maps, size: tuple[int, int], resize: str | None, normalize: bool) -> np.ndarray:
    """Raw maps (batch, h, w) resized to `size` (`resize_maps`) and, if `normalize`, min-max
    normalised per sample (`normalize_maps`): the last step of every CAM method."""
    maps = resize_maps(maps, size, resize)
    return normalize_maps(maps) if normalize else np.asarray(maps, np.float32)


def finish_maps_tf(
    maps: tf.Tensor, size: tuple[int, int], resize: str | None, normalize: bool
) -> tf.Tensor:
    """`finish_maps` in TensorFlow ops (for a traced graph): raw maps (batch, h, w) resized
    with ``tf.image.resize(..., "bilinear")`` (resize="bilinear") or kept (None), then, if
    `normalize`, ``(m - min) / (max - min + 1e-7)`` per sample, in float32.

    Raises:
        ValueError: for resize="zoom" (NumPy only) or an unknown mode.
    """
    check_resize(resize)
    if resize == "zoom":
        raise ValueError("resize='zoom' is computed with NumPy; in a graph use 'bilinear'.")
    maps = tf.cast(maps, tf.float32)
    if resize is not None and tuple(maps.shape[1:3]) != tuple(size):
        maps = tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]
    if not normalize:
        return maps
    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return (maps - low) / (high - low + EPSILON)


def normalize_maps(maps) -> np.ndarray:
    """Per-sample min-max scaling to [0, 1]: ``(m - min) / (max - min + 1e-7)``.

    The epsilon is tf-keras-vis's (``keras.backend.epsilon()``); a constant or all-zero map comes
    back as zeros, never NaN.

    Args:
        maps: array (batch, ...).

    Returns:
        float32 array of the same shape.
    """
    maps = np.asarray(maps, np.float32)
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    high = maps.max(axis=axes, keepdims=True)
    return ((maps - low) / (high - low + np.float32(EPSILON))).astype(np.float32)


def resize_maps(maps, size: tuple[int, int], mode: str | None = "bilinear") -> np.ndarray:
    """Resizes maps (batch, h, w) to (batch, *size).

    Args:
        maps: array (batch, h, w).
        size: (height, width) wanted.
        mode: "bilinear" (the default): ``tf.image.resize(..., "bilinear")``, half-pixel
            centres, as OpenCV's ``cv2.resize(INTER_LINEAR)`` and pytorch-grad-cam; "zoom":
            ``scipy.ndimage.zoom(maps, (1, H/h, W/w), order=1)``, linear interpolation with the
            corners of the map on the corners of the image, exactly as tf-keras-vis (for
            parity; computed batched by `zoom_maps`, bit for bit); None: no resize
            (feature-map resolution).

    Returns:
        float32 array.
    """
    check_resize(mode)
    maps = np.asarray(maps, np.float32)
    if mode is None or tuple(maps.shape[1:3]) == tuple(size):
        return maps
    if mode == "zoom":
        return zoom_maps(maps, size)
    resized = tf.image.resize(maps[..., None], size, method="bilinear")
    return resized.numpy()[..., 0].astype(np.float32)


# Output samples per chunk of `zoom_maps`: bounds its float64 temporaries to a few MB.
_ZOOM_CHUNK = 1 << 18


@functools.lru_cache(maxsize=128)
def _zoom_axis(size_in: int, size_out: int, mode: str) -> tuple[np.ndarray, ...]:
    """Along one axis of ``scipy.ndimage.zoom(order=1, grid_mode=False)``: for each output
    sample, its two input neighbours and their weights, as scipy's C code computes them.

    The output sample o sits at ``c = o * ((n - 1) / (N - 1))`` in the input; with
    ``t = c - floor(c)`` the weights are ``w0 = 1 - t`` and ``w1 = 1 - w0`` (scipy's, not
    ``t``: they differ in the last bit). A neighbour beyond the edge is the edge sample in
    "nearest" mode; in "constant" mode a sample whose c lies beyond the last input sample (a
    rounding artefact of the last one) is 0 (cval), and a neighbour beyond the edge only ever
    gets weight 0.
    """
    step = (size_in - 1) / (size_out - 1) if size_out > 1 else 1.0
    coordinate = np.arange(size_out, dtype=np.float64) * step
    start = np.floor(coordinate)
    w0 = 1.0 - (coordinate - start)
    w1 = 1.0 - w0
    if mode == "constant":
        outside = coordinate > size_in - 1
        w0, w1 = np.where(outside, 0.0, w0), np.where(outside, 0.0, w1)
    elif mode != "nearest":
        raise ValueError(f"mode must be 'constant' or 'nearest'. Received: mode={mode!r}")
    first = np.clip(start.astype(np.intp), 0, size_in - 1)
    second = np.clip(first + 1, 0, size_in - 1)
    arrays = (first, second, w0, w1)
    for array in arrays:
        array.setflags(write=False)
    return arrays


def zoom_maps(maps, size: tuple[int, int], mode: str = "constant") -> np.ndarray:
    """``scipy.ndimage.zoom(maps, (1, H/h, W/w), order=1, mode=mode)``, bit for bit, batched.

    Order-1 zoom is separable: each output pixel mixes 2 x 2 input pixels with per-row and
    per-column weights (see `_zoom_axis`). scipy loops over output pixels in C with generic
    spline code; here the same float64 products ``(value * w_row) * w_col`` are summed over the
    four neighbours in scipy's order (row-major) with whole-array NumPy operations, and rounded
    to float32 once, as scipy does, so the result is identical, not merely close.

    Args:
        maps: array (batch, h, w).
        size: (H, W) wanted; as in scipy, the output has ``round(h * (H / h))`` rows (= H).
        mode: "constant" (scipy's default, used for maps) or "nearest" (Score-CAM's masks).

    Returns:
        float32 array (batch, H, W).
    """
    maps = np.asarray(maps, np.float32)
    batch, height, width = maps.shape
    out_h = int(round(height * (size[0] / height)))
    out_w = int(round(width * (size[1] / width)))
    rows, cols = _zoom_axis(height, out_h, mode), _zoom_axis(width, out_w, mode)
    result = np.empty((batch, out_h, out_w), np.float32)
    chunk = max(1, _ZOOM_CHUNK // (out_h * out_w))
    for start in range(0, batch, chunk):
        values = maps[start : start + chunk].astype(np.float64)
        total = None
        for row_index, row_weight in ((rows[0], rows[2]), (rows[1], rows[3])):
            weighted = values[:, row_index, :] * row_weight[:, None]
            for col_index, col_weight in ((cols[0], cols[2]), (cols[1], cols[3])):
                term = weighted[:, :, col_index] * col_weight
                if total is None:
                    total = term
                else:
                    total += term
        result[start : start + chunk] = total
    return result
