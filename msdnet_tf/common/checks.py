"""Argument checks with one message each: what was wrong, what was expected, what was received.

Every public function of msdnet_tf validates its integers and image batches through these, so a
user sees the same wording everywhere (``... Received: name=value``).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_image_batch", "check_int", "check_positive_int"]


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as a Python int, checked to be an integer (not a bool) in [minimum, maximum].

    Raises:
        ValueError: ``"`name` must be an integer >= minimum. Received: name=value"``.
    """
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if (
        not is_int
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        expected = "an integer" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_positive_int(value, name: str, allow_none: bool = False) -> int | None:
    """`value` as a positive Python int (None passes through when `allow_none`).

    Raises:
        ValueError: ``"`name` must be an integer >= 1. Received: name=value"``.
    """
    if value is None and allow_none:
        return None
    return check_int(value, name, minimum=1)


def check_image_batch(
    images, image_shape=None, name: str = "images", allow_empty: bool = False
) -> np.ndarray:
    """`images` as a C-contiguous float32 ``(N, H, W, C)`` array of finite model inputs.

    The engines and the metrics take images already normalised as the model expects: integer
    images (raw ``uint8`` pixels) are rejected rather than silently fed to the network.

    Args:
        images: the batch (array-like).
        image_shape: the expected ``(H, W, C)`` (None entries match any size), or None.
        name: the argument's name in the messages.
        allow_empty: accept a batch of 0 images (the serving engines answer it with empty
            results); its shape and dtype are still checked.

    Raises:
        ValueError: not 4-D, an empty batch, another image shape, not floating point, or NaN /
            infinite values; the message names the expected and the received value.
    """
    array = np.asarray(images)
    expected = "(N, " + ", ".join(map(str, image_shape or ("H", "W", "C"))) + ")"
    if array.ndim != 4:
        hint = f" For one image, pass `{name}[None]`." if array.ndim == 3 else ""
        raise ValueError(
            f"`{name}` must be a batch of shape {expected}.{hint} Received: shape {array.shape}"
        )
    if array.shape[0] == 0 and not allow_empty:
        raise ValueError(f"`{name}` is an empty batch. Received: shape {array.shape}")
    if image_shape is not None and any(
        want is not None and got != want for got, want in zip(array.shape[1:], image_shape)
    ):
        raise ValueError(f"`{name}` must have shape {expected}. Received: shape {array.shape}")
    if array.dtype.kind != "f":
        raise ValueError(
            f"`{name}` must be floating point model inputs (normalised as the model expects; "
            f"convert raw pixels first). Received: dtype {array.dtype}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite. Received: NaN or infinite values")
    return array
