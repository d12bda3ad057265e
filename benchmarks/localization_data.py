"""A localization set built from scikit-learn's bundled digits: one real digit per image, pasted
at a random position among clutter cut from other digits, with its box known.

Each 32x32 grey image (repeated to 3 channels) holds:

- the object: a real 8x8 digit upscaled (OpenCV bilinear) to `size` x `size` pixels and pasted
  at a uniformly random position; its box is the tight box of its ink (pixels > 0.1);
- `clutter` fragments: for each, another random digit of the same split, rendered at the same
  size, of which a random half-size window (strokes, never a whole digit) is pasted at a random
  position that keeps it off the object's box when possible. Overlaps combine by maximum.

The label is the object's class, so a classifier must find the digit to be right, and an
explanation of that class should point inside the box. Train images use the digits of the
fixed training split, evaluation images those of the test split (`msdnet_tf.data.digits`), so
no evaluated digit was seen in training.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from msdnet_tf.data.digits import DIGITS_STATS, digits_split_indices

__all__ = ["LocalizationSet", "make_localization_set", "normalize"]

SIDE = 32
INK = 0.1


@dataclasses.dataclass(frozen=True)
class LocalizationSet:
    """Images with one object each.

    Attributes:
        images: (N, 32, 32, 3) float32 in [0, 1].
        labels: (N,) int32 class of the object.
        boxes: (N, 4) int32 ``(top, left, bottom, right)``, bottom/right exclusive.
        sizes: (N,) int32 object size in pixels.
        clutter: (N,) int32 number of clutter fragments.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray
    clutter: np.ndarray

    def subset(self, index) -> LocalizationSet:
        """The images at `index`."""
        return LocalizationSet(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def box_masks(self) -> np.ndarray:
        """(N, 32, 32) bool, True inside each object's box."""
        masks = np.zeros((len(self.labels), SIDE, SIDE), bool)
        for mask, (top, left, bottom, right) in zip(masks, self.boxes):
            mask[top:bottom, left:right] = True
        return masks


def normalize(images: np.ndarray) -> np.ndarray:
    """[0, 1] images -> model inputs, with the digits data set's mean and std."""
    mean, std = (np.asarray(v, np.float32) for v in DIGITS_STATS)
    return ((images - mean) / std).astype(np.float32)


def _render(digit: np.ndarray, size: int) -> np.ndarray:
    return np.clip(cv2.resize(digit, (size, size), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def make_localization_set(
    split: str, count: int, sizes=(12, 16), clutter=(0, 3, 6), seed: int = 0
) -> LocalizationSet:
    """`count` images, sizes and clutter levels drawn uniformly from `sizes` and `clutter`.

    Args:
        split: "train" or "test": whose digits are used (objects and clutter alike).
        count: number of images.
        sizes: object sizes in pixels (each <= 32).
        clutter: numbers of clutter fragments.
        seed: seed of every random choice.

    Returns:
        A `LocalizationSet`.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = np.clip(bunch.images / 16.0, 0.0, 1.0).astype(np.float32)
    train, _, test = digits_split_indices(bunch.target)
    pool = {"train": train, "test": test}[split]
    rng = np.random.default_rng(seed)
    images = np.zeros((count, SIDE, SIDE), np.float32)
    labels, boxes = np.zeros(count, np.int32), np.zeros((count, 4), np.int32)
    size_of = rng.choice(np.asarray(sizes), count).astype(np.int32)
    clutter_of = rng.choice(np.asarray(clutter), count).astype(np.int32)
    for i in range(count):
        size, index = int(size_of[i]), int(rng.choice(pool))
        patch = _render(digits[index], size)
        top, left = rng.integers(0, SIDE - size + 1, size=2)
        rows, cols = np.nonzero(patch > INK)
        box = (top + rows.min(), left + cols.min(), top + rows.max() + 1, left + cols.max() + 1)
        canvas = images[i]
        half = max(2, size // 2)
        for _ in range(int(clutter_of[i])):
            other = _render(digits[int(rng.choice(pool))], size)
            r0, c0 = rng.integers(0, size - half + 1, size=2)
            piece = other[r0 : r0 + half, c0 : c0 + half]
            for _attempt in range(20):  # off the object's box when there is room
                pr, pc = rng.integers(0, SIDE - half + 1, size=2)
                if not _overlaps((pr, pc, pr + half, pc + half), box):
                    break
            region = canvas[pr : pr + half, pc : pc + half]
            np.maximum(region, piece, out=region)
        region = canvas[top : top + size, left : left + size]
        np.maximum(region, patch, out=region)
        labels[i], boxes[i] = bunch.target[index], box
    rgb = np.repeat(images[..., None], 3, axis=-1)
    return LocalizationSet(rgb, labels, boxes, size_of, clutter_of)
