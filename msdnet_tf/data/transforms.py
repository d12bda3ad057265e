"""Per-image transforms of the input pipelines, keyed by stateless random seeds.

A training transform maps ``(uint8 HWC image or file path, stateless key)`` to a uint8 image at the
model's input size; an evaluation transform maps ``(uint8 HWC image or file path)`` to one. Every
random decision uses ``tf.image.stateless_*`` ops with the key (or a key split off it), so an
augmented image is a function of the key only (see `msdnet_tf.data.splits.Splits`).

- `pad_crop_transform`: CIFAR's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``, and
  the digits' translation (no flip).
- `random_resized_crop_transform` / `resize_centre_crop_transform`: ImageNet's
  ``RandomResizedCrop(224)`` + flip, and ``Resize(256)`` + ``CenterCrop(224)``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

__all__ = [
    "EvalTransform",
    "TrainTransform",
    "identity",
    "pad_crop_transform",
    "random_resized_crop_transform",
    "resize_centre_crop_transform",
]

# (uint8 HWC image or file path, stateless key) -> uint8 image at the model's input size.
TrainTransform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# (uint8 HWC image or file path) -> uint8 image at the model's input size.
EvalTransform = Callable[[tf.Tensor], tf.Tensor]


def _subkey(key: tf.Tensor) -> tf.Tensor:
    """A second stateless key derived from `key`, for an independent random decision."""
    return tf.random.experimental.stateless_split(key, num=1)[0]


def pad_crop_transform(pad: int, flip: bool) -> TrainTransform:
    """Zero-pad `pad` pixels on every side, random crop back to size, optional horizontal flip.

    The output is one ``H x W`` window of the ``(H + 2 pad) x (W + 2 pad)`` zero-padded image
    (offsets 0..2 pad on each axis), mirrored left-right with probability 1/2 when `flip`.

    Args:
        pad: zero pixels added on every side (the largest translation).
        flip: also flip horizontally at random (with a key split off the crop's key).

    Returns:
        A training transform ``(uint8 HWC image, key) -> uint8 HWC image`` of the same shape.
    """

    def transform(image, key):
        height, width, channels = image.shape
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, [height, width, channels], seed=key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=_subkey(key))
        return image

    return transform


def identity(image):
    """The evaluation transform of in-memory data sets: the image unchanged."""
    return image


def _decode(path):
    # decode_image reads JPEG, PNG, BMP and GIF by content (ImageNet has PNGs named .JPEG).
    image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def random_resized_crop_transform(size: int) -> TrainTransform:
    """Random crop of 8%-100% of the area, aspect ratio 3/4-4/3, resized to size x size, and a
    random horizontal flip (the reference's RandomResizedCrop; after 10 failed attempts the
    whole image is used).

    Args:
        size: side of the square output.

    Returns:
        A training transform ``(image file path, key) -> uint8 size x size x 3 image``.
    """

    def transform(path, key):
        image = _decode(path)
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.zeros([1, 0, 4]),
            seed=key,
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.slice(image, begin, extent), [size, size], antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=_subkey(key))
        return _to_uint8(image)

    return transform


def resize_centre_crop_transform(size: int, resize: int) -> EvalTransform:
    """Resize the shorter side to `resize`, then the central size x size crop.

    Args:
        size: side of the square output.
        resize: the shorter side after resizing (>= `size`).

    Returns:
        An evaluation transform ``(image file path) -> uint8 size x size x 3 image``.
    """

    def transform(path):
        image = _decode(path)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        new = tf.cast(tf.round(shape * (resize / tf.reduce_min(shape))), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        return _to_uint8(image[top : top + size, left : left + size])

    return transform
