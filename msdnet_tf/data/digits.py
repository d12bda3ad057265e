"""The ``digits`` data set: scikit-learn's bundled 1,797 real 8x8 handwritten digits.

Upscaled to 32x32 RGB, with a fixed stratified 1,078 / 269 / 450 split. Nothing is downloaded,
so it runs offline on any machine (the default data set of the configs and tests).
"""

from __future__ import annotations

import functools

import numpy as np

from msdnet_tf.common import check_int
from msdnet_tf.data.splits import Splits
from msdnet_tf.data.transforms import identity, pad_crop_transform

__all__ = [
    "DIGITS_FRACTIONS",
    "DIGITS_SPLIT_SEED",
    "DIGITS_STATS",
    "digits_images",
    "digits_split_indices",
    "load_digits",
]

# Digits: mean / std of the 32x32 training split (computed: 0.30616 / 0.32421; checked by
# tests/test_data.py to 5e-4). Trained digits models depend on these exact constants: keep them.
DIGITS_STATS = ((0.3063, 0.3063, 0.3063), (0.3242, 0.3242, 0.3242))
DIGITS_SPLIT_SEED = 20180430  # fixed: the digits split never depends on the run's seed
DIGITS_FRACTIONS = (0.60, 0.15, 0.25)  # train, validation, test, of every class


@functools.lru_cache(maxsize=4)
def digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (values 0..16) -> read-only uint8 RGB at size x size, labels.

    Bilinear upscaling (OpenCV ``INTER_LINEAR``, pixel centres aligned) of the [0, 1]-scaled
    images, rounded to uint8 and repeated to 3 channels. Cached per size.

    Args:
        size: side of the square output images.

    Returns:
        ``(images, labels)``: read-only uint8 ``(1797, size, size, 3)`` and int32 ``(1797,)``, in
        scikit-learn's order.
    """
    import cv2
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.clip(bunch.images / 16.0, 0.0, 1.0).astype(np.float32)
    resized = np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]
    )
    gray = np.round(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    rgb.setflags(write=False)
    labels.setflags(write=False)
    return rgb, labels


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified digits split: 60% train, 15% validation, 25% test of every class.

    Each class's indices are permuted by one ``numpy.random.default_rng(DIGITS_SPLIT_SEED)``
    (classes in increasing order), then cut at round(60%) and round(60%) + round(15%). No
    TensorFlow randomness is involved, so the split is the same on every machine.

    Args:
        labels: the 1,797 labels of ``sklearn.datasets.load_digits()``.

    Returns:
        Sorted index arrays (train, validation, test): 1,078 / 269 / 450 images.
    """
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    parts = ([], [], [])
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(DIGITS_FRACTIONS[0] * len(members)))
        n_val = int(round(DIGITS_FRACTIONS[1] * len(members)))
        for part, chunk in zip(parts, np.split(members, [n_train, n_train + n_val])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_digits(batch_size=64, seed=0, augment=True, image_size=32, drop_remainder=True) -> Splits:
    """scikit-learn's bundled handwritten digits as a 10-class, 32x32 RGB data set.

    1,797 real 8x8 images (values 0..16) ship inside scikit-learn: nothing is downloaded. They
    are scaled to [0, 1], upscaled bilinearly to `image_size` (OpenCV), repeated to 3 channels
    and split once and for all (stratified, fixed seed, `digits_split_indices`) into 1,078 train
    / 269 validation / 450 test images. Normalisation: `DIGITS_STATS`, the training split's mean
    and std at 32x32 (also used at other sizes). Augmentation: zero-pad ``image_size // 16``
    pixels (2 at 32x32) and random-crop back, a translation of up to that many pixels; no flips,
    since digits are not mirror-symmetric.

    Args:
        batch_size: batch size of the returned datasets.
        seed: seed of the training order and augmentation (not of the split).
        augment: augment the training split.
        image_size: side of the square model input (default 32).
        drop_remainder: drop the last partial training batch.

    Returns:
        The `Splits`, named ``"digits"``, class names ``'0'..'9'``.

    Raises:
        ValueError: a bad `batch_size` or `image_size`.

    Example:
        >>> splits = load_digits(batch_size=64)
        >>> next(iter(splits.train_for_epoch(0)))[0].shape
        TensorShape([64, 32, 32, 3])
    """
    check_int(batch_size, "batch_size", minimum=1)
    check_int(image_size, "image_size", minimum=8)
    images, labels = digits_images(int(image_size))
    train, val, test = digits_split_indices(labels)
    return Splits(
        name="digits",
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        image_size=(int(image_size), int(image_size)),
        mean=DIGITS_STATS[0],
        std=DIGITS_STATS[1],
        train_x=images[train],
        train_y=labels[train],
        val_x=images[val],
        val_y=labels[val],
        test_x=images[test],
        test_y=labels[test],
        train_transform=pad_crop_transform(max(1, int(image_size) // 16), flip=False),
        eval_transform=identity,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source="sklearn.datasets.load_digits",
    )
