"""The argument checks every public function of gradcam_tf shares: one image-batch check and one
positive-integer check, so that the same mistake gets the same message everywhere.

Every check raises a one-line `ValueError` that names the argument, says what was expected and
ends with what was received.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["check_images", "check_positive_int"]


def check_positive_int(value, name: str, allow_none: bool = False) -> int | None:
    """Checks that `value` is an int >= 1 (bools are not ints here).

    Args:
        value: the value given.
        name: the argument's name, for the message.
        allow_none: accept None (and return it).

    Returns:
        ``int(value)``, or None when allowed and given.

    Raises:
        ValueError: ``"`name` must be a positive int. Received: name=value"``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def check_images(
    images, input_shape: Sequence[int | None] | None = None, dtype: str = "float32"
) -> tf.Tensor:
    """Checks a batch of model inputs; returns it as a tensor of `dtype`.

    The batch must be 4-D (batch, height, width, channels), non-empty, floating point when the
    model takes floats (already preprocessed as the model expects: no silent uint8 -> float
    conversion), finite, and match `input_shape` on every axis the model fixes.

    Args:
        images: array-like or tensor.
        input_shape: the model's input shape, batch axis first (``None`` where free); None
            accepts any 4-D batch.
        dtype: the model input's dtype name.

    Returns:
        ``tf.cast(images, dtype)``.

    Raises:
        ValueError: naming the first problem found and what was received.
    """
    if isinstance(images, tf.Tensor):
        given, floating, shape = images.dtype.name, images.dtype.is_floating, images.shape
    else:
        images = np.asarray(images)
        given, floating, shape = str(images.dtype), images.dtype.kind == "f", images.shape
    shape = tuple(shape)
    wanted = tuple(input_shape[1:]) if input_shape is not None else ("height", "width", "channels")
    expected = "(batch, " + ", ".join(str(d) for d in wanted) + ")"
    if "float" in dtype and not floating:
        raise ValueError(
            f"`images` must be floating point, already preprocessed as the model expects "
            f"(convert with `images.astype('float32')`). Received: images of dtype {given}"
        )
    if len(shape) != 4:
        hint = " (for one image, pass `image[None]`)" if len(shape) == 3 else ""
        raise ValueError(
            f"`images` must be a 4-D batch of shape {expected}{hint}. Received: images of "
            f"shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(
            f"`images` must be a non-empty batch. Received: an empty batch of shape {shape}"
        )
    if input_shape is not None:
        for axis, (got, want) in enumerate(zip(shape[1:], wanted), start=1):
            if want is not None and got != want:
                raise ValueError(
                    f"`images` must have shape {expected} to match the model input (axis "
                    f"{axis} is {got}, expected {want}). Received: images of shape {shape}"
                )
    images = tf.cast(images, dtype)
    if images.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(images))):
        raise ValueError("`images` must be finite. Received: images containing NaN or inf")
    return images
