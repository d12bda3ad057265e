"""`Splits`: the train / validation / test splits every loader returns, and the hold-out.

Determinism and resumption: epoch ``e`` of a run with seed ``s`` visits the training images in the
order ``tf.random.experimental.stateless_shuffle(range(N), seed=[s, e])``, and training image ``i``
(its index in the training arrays, not its position in a batch) is augmented with the stateless
key ``[s * 1000003 + e, i]`` (the flip uses a key split off that one). Nothing depends on global
random state, on iterator state or on the batch size, so ``train_for_epoch(e)`` is the same on
every call and in every process, and a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run would have seen (``train_dataset(start_epoch=e)``). TensorFlow documents
stateless random ops as identical across runs and between CPU and GPU; a new TensorFlow version
may change them.

Hold-out (`holdout`): as the reference, 5,000 CIFAR (50,000 ImageNet) training images form the
validation split, used for model selection and for the thresholds of budgeted batch
classification. They are chosen by ``numpy.random.default_rng(split_seed)`` (``split_seed=0`` by
default, independent of the training seed, so runs with different seeds share one validation
set). ``validation_size=0`` trains on every training image; the validation split is then empty,
and `msdnet_tf.evaluation.predict.evaluate_run` skips the budgeted sweep rather than set its
thresholds on the test set (which would make the reported accuracy-vs-FLOPs curve optimistic).

Performance: in-memory data sets (digits, CIFAR) are decoded once into uint8 numpy arrays (the
role ``Dataset.cache()`` plays for decoded files), so an epoch only gathers, augments and
normalises; ImageNet files are read and decoded per epoch. Every map runs with
``num_parallel_calls=AUTOTUNE`` and ``deterministic=True``; evaluation datasets and
`Splits.train_dataset` are prefetched.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from msdnet_tf.common import check_int
from msdnet_tf.data.transforms import EvalTransform, TrainTransform

__all__ = ["CorruptDataError", "DataNotFoundError", "Splits", "holdout"]

# A prime multiplier keeps the first word of the augmentation key distinct for every
# (seed, epoch) pair with epoch < 1,000,003.
_EPOCH_STRIDE = 1000003


class DataNotFoundError(FileNotFoundError):
    """The data set is not where it was looked for; the message lists every path tried and
    says what to put where."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read, or holds wrong shapes or labels; the message names
    the file."""


@dataclasses.dataclass(eq=False)
class Splits:
    """Train / validation / test splits of one data set, and what the rest of the code needs.

    In-memory data sets (digits, CIFAR) keep uint8 NHWC arrays; folder data sets (ImageNet) keep
    file paths and decode them on the fly. Treat the arrays as read-only.

    Attributes:
        name: data set name, one of `msdnet_tf.data.DATASETS`.
        num_classes: number of classes.
        class_names: one name per class id (CIFAR-10 names, digits ``'0'..'9'``, wnids).
        image_size: (height, width) of the model input.
        mean: per-channel mean of pixels in [0, 1]; model input ``x = (pixel / 255 - mean) / std``.
        std: per-channel standard deviation (with `mean`, for de-normalising in pictures).
        train_x, val_x, test_x: uint8 NHWC images, or file paths (ImageNet).
        train_y, val_y, test_y: int32 labels.
        train_transform: augmentation, ``(image or path, key) -> uint8 image``.
        eval_transform: evaluation preprocessing, ``(image or path) -> uint8 image``.
        batch_size: batch size of every dataset returned.
        seed: seed of the training order and augmentation.
        augment: augment the training split (else training images get `eval_transform`).
        drop_remainder: drop the last partial training batch (evaluation never drops any).
        source: where the data were read from.

    Example:
        >>> from msdnet_tf.data import load_dataset
        >>> splits = load_dataset("digits", batch_size=64)
        >>> splits.sizes
        {'train': 1078, 'validation': 269, 'test': 450}
        >>> images, labels = next(iter(splits.train_for_epoch(0)))
        >>> images.shape, images.dtype.name, labels.dtype.name
        (TensorShape([64, 32, 32, 3]), 'float32', 'int32')
    """

    name: str
    num_classes: int
    class_names: list[str]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_x: np.ndarray = dataclasses.field(repr=False)
    train_y: np.ndarray = dataclasses.field(repr=False)
    val_x: np.ndarray = dataclasses.field(repr=False)
    val_y: np.ndarray = dataclasses.field(repr=False)
    test_x: np.ndarray = dataclasses.field(repr=False)
    test_y: np.ndarray = dataclasses.field(repr=False)
    train_transform: TrainTransform = dataclasses.field(repr=False)
    eval_transform: EvalTransform = dataclasses.field(repr=False)
    batch_size: int = 64
    seed: int = 0
    augment: bool = True
    drop_remainder: bool = True
    source: str = ""
    _train_tensors: tuple | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        check_int(self.batch_size, "batch_size", minimum=1)
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` must have {self.num_classes} entries. Received: "
                f"{len(self.class_names)} names"
            )
        for split, x, y in self._arrays():
            if len(x) != len(y):
                raise ValueError(
                    f"The {split} split has {len(x)} images but {len(y)} labels. Received: "
                    f"{split} images of shape {np.shape(x)}"
                )

    def _arrays(self):
        return (
            ("train", self.train_x, self.train_y),
            ("validation", self.val_x, self.val_y),
            ("test", self.test_x, self.test_y),
        )

    @property
    def sizes(self) -> dict[str, int]:
        """Number of images per split: ``{"train": ..., "validation": ..., "test": ...}``."""
        return {split: len(y) for split, _, y in self._arrays()}

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch (0 if `drop_remainder` and fewer images than a batch)."""
        n = len(self.train_y)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def normalize(self, images_uint8) -> np.ndarray:
        """uint8 NHWC images -> the model's float32 input (as the pipelines compute it).

        Args:
            images_uint8: array-like of pixels in 0..255, channels last.

        Returns:
            float32 array ``(pixel / 255 - mean) / std``.
        """
        x = np.asarray(images_uint8, np.float32) / np.float32(255.0)
        return ((x - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

    def denormalize(self, images) -> np.ndarray:
        """The model's input -> float32 RGB in [0, 1], for display.

        Args:
            images: normalised images, channels last.

        Returns:
            float32 array clipped to [0, 1].
        """
        x = np.asarray(images, np.float32) * np.float32(self.std) + np.float32(self.mean)
        return np.clip(x, 0.0, 1.0)

    def train_for_epoch(self, epoch) -> tf.data.Dataset:
        """Epoch `epoch`'s shuffled, augmented batches: a function of (seed, epoch) only.

        Args:
            epoch: the 0-based epoch, a Python int or a scalar integer tensor (so that it can be
                used inside ``tf.data.Dataset.range(...).flat_map``).

        Returns:
            A dataset of `steps_per_epoch` batches ``(float32 images, int32 labels)``.
        """
        xs, ys = self._train_tensor_pair()
        epoch = tf.cast(epoch, tf.int64)
        seed = tf.constant(self.seed, tf.int64)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(self.train_y), dtype=tf.int64), seed=tf.stack([seed, epoch])
        )
        first_word = seed * _EPOCH_STRIDE + epoch
        normalize, augment = self._normalizer(), self.augment
        train_transform, eval_transform = self.train_transform, self.eval_transform

        def load(index):
            image = tf.gather(xs, index)
            if augment:
                image = train_transform(image, tf.stack([first_word, index]))
            else:
                image = eval_transform(image)
            return normalize(image), tf.gather(ys, index)

        return (
            tf.data.Dataset.from_tensor_slices(order)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(self.batch_size, drop_remainder=self.drop_remainder)
        )

    def train_dataset(self, start_epoch: int = 0, epochs: int | None = None) -> tf.data.Dataset:
        """Epochs `start_epoch`, `start_epoch + 1`, ... one after the other, prefetched.

        For ``model.fit(..., steps_per_epoch=splits.steps_per_epoch, initial_epoch=start_epoch)``:
        a run resumed at `start_epoch` sees the batches of an uninterrupted run.

        Args:
            start_epoch: first epoch.
            epochs: number of epochs (None: practically endless).

        Returns:
            The concatenated batches of those epochs.
        """
        stop = start_epoch + (epochs if epochs is not None else 1_000_000)
        return (
            tf.data.Dataset.range(start_epoch, stop)
            .flat_map(self.train_for_epoch)
            .prefetch(tf.data.AUTOTUNE)
        )

    def validation_dataset(self) -> tf.data.Dataset:
        """The validation split, in order, batched (last batch kept), not augmented."""
        return self._eval_dataset(self.val_x, self.val_y)

    def test_dataset(self) -> tf.data.Dataset:
        """The test split, in order, batched (last batch kept), not augmented."""
        return self._eval_dataset(self.test_x, self.test_y)

    def test_images(self) -> np.ndarray:
        """The test split as uint8 NHWC images at the model's input size (for pictures).

        For folder data sets this decodes and resizes every test image (ImageNet's 50,000 at
        224x224 are 7.5 GB).
        """
        if self.test_x.dtype == np.uint8:
            return self.test_x
        transform = self.eval_transform
        dataset = (
            tf.data.Dataset.from_tensor_slices(self.test_x)
            .map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(256)
        )
        chunks = [batch.numpy() for batch in dataset]
        if not chunks:
            return np.zeros((0, *self.image_size, 3), np.uint8)
        return np.concatenate(chunks)

    def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw test split as numpy: (uint8 NHWC images at the model's size, int32 labels)."""
        return self.test_images(), self.test_y

    def _train_tensor_pair(self):
        # Made once, eagerly (even when first called while tracing a flat_map), then captured.
        if self._train_tensors is None:
            with tf.init_scope():
                self._train_tensors = (tf.constant(self.train_x), tf.constant(self.train_y))
        return self._train_tensors

    def _eval_dataset(self, xs, ys) -> tf.data.Dataset:
        normalize, transform = self._normalizer(), self.eval_transform
        return (
            tf.data.Dataset.from_tensor_slices((xs, ys))
            .map(
                lambda x, y: (normalize(transform(x)), y),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            .batch(self.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    def _normalizer(self):
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return lambda image: (tf.cast(image, tf.float32) / 255.0 - mean) / std


def holdout(x, y, size: int, split_seed: int):
    """Hold `size` training samples out for validation (fixed by `split_seed`), keeping order.

    The validation samples are the first `size` entries of
    ``numpy.random.default_rng(split_seed).permutation(len(y))``; both parts are returned in their
    original order.

    Args:
        x: the training images (or file paths).
        y: their labels.
        size: samples held out, in [0, len(y)).
        split_seed: seed of the choice (independent of the training seed).

    Returns:
        ``(train_x, train_y, val_x, val_y)``.

    Raises:
        ValueError: `size` is not an integer in [0, len(y)).
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 0 <= size < len(y):
        raise ValueError(
            f"`validation_size` must be an int in [0, {len(y)}) for {len(y)} training images. "
            f"Received: validation_size={size}"
        )
    order = np.random.default_rng(split_seed).permutation(len(y))
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return x[train], y[train], x[val], y[val]
