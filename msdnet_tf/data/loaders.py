"""Input pipelines (tf.data) for MSD-Net: the bundled digits, CIFAR-10/100 and ImageNet folders.

Nothing is ever downloaded. Every loader returns a `Splits`: train / validation / test
`tf.data.Dataset`s of ``(float32 NHWC normalised images, int32 labels)`` plus what the rest of the
code needs (class names, mean and std, split sizes, the raw uint8 test images).

Data sets:
- ``digits`` (the default): scikit-learn's bundled 1,797 real 8x8 handwritten digits, upscaled to
  32x32 RGB, with a fixed stratified 1,078 / 269 / 450 split. Runs offline on any machine.
- ``cifar10`` / ``cifar100``: the python archives (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``) or their extracted folders, looked for in `data_dir`, then in Keras'
  dataset cache, then in a prepared TensorFlow Datasets copy (see `load_cifar`).
- ``imagenet``: class folders ``data_dir/train/<wnid>/*.JPEG`` and ``data_dir/val/<wnid>/*.JPEG``.

Hold-out: as the reference, 5,000 CIFAR (50,000 ImageNet) training images form the validation
split, used for model selection and for the thresholds of budgeted batch classification. They are
chosen by ``numpy.random.default_rng(split_seed)`` (``split_seed=0`` by default, independent of the
training seed, so runs with different seeds share one validation set). ``validation_size=0``
trains on every training image; the validation split is then empty, and
`msdnet_tf.evaluation.predict.evaluate_run` skips the budgeted sweep rather than set its thresholds
on
the test set (which would make the reported accuracy-vs-FLOPs curve optimistic).

Determinism and resumption: epoch ``e`` of a run with seed ``s`` visits the training images in the
order ``tf.random.experimental.stateless_shuffle(range(N), seed=[s, e])``, and training image ``i``
(its index in the training arrays, not its position in a batch) is augmented with the stateless
key ``[s * 1000003 + e, i]`` (the flip uses a key split off that one). Nothing depends on global
random state, on iterator state or on the batch size, so ``train_for_epoch(e)`` is the same on
every call and in every process, and a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run would have seen (``train_dataset(start_epoch=e)``). TensorFlow documents
stateless random ops as identical across runs and between CPU and GPU; a new TensorFlow version
may change them.

Performance: digits and CIFAR are decoded once into uint8 numpy arrays held in memory (the role
``Dataset.cache()`` plays for decoded files), so an epoch only gathers, augments and normalises;
ImageNet files are read and decoded per epoch. Every map runs with ``num_parallel_calls=AUTOTUNE``
and ``deterministic=True``; evaluation datasets and `Splits.train_dataset` are prefetched.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import math
import os
import pickle
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_STATS",
    "DATASETS",
    "DIGITS_FRACTIONS",
    "DIGITS_STATS",
    "IMAGENET_STATS",
    "CorruptDataError",
    "DataNotFoundError",
    "Splits",
    "digits_split_indices",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_imagenet_folders",
]

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")
DEFAULT_VALIDATION_SIZE = {"cifar10": 5000, "cifar100": 5000, "imagenet": 50000}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]  # fmt: skip
# Per-channel (mean, std) of pixels scaled to [0, 1], as the reference normalises.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Digits: mean / std of the 32x32 training split (computed: 0.30616 / 0.32421; checked by
# tests/test_data.py to 5e-4). Trained digits models depend on these exact constants: keep them.
DIGITS_STATS = ((0.3063, 0.3063, 0.3063), (0.3242, 0.3242, 0.3242))
DIGITS_SPLIT_SEED = 20180430  # fixed: the digits split never depends on the run's seed
DIGITS_FRACTIONS = (0.60, 0.15, 0.25)  # train, validation, test, of every class

# A prime multiplier keeps the first word of the augmentation key distinct for every
# (seed, epoch) pair with epoch < 1,000,003.
_EPOCH_STRIDE = 1000003

# (uint8 HWC image or file path, stateless key) -> uint8 image at the model's input size.
TrainTransform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# (uint8 HWC image or file path) -> uint8 image at the model's input size.
EvalTransform = Callable[[tf.Tensor], tf.Tensor]


class DataNotFoundError(FileNotFoundError):
    """The data set is not where it was looked for; the message lists every path tried and
    says what to put where."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read, or holds wrong shapes or labels; the message names
    the file."""


# ------------------------------------------------------------------------------------------
# The result object
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Splits:
    """Train / validation / test splits of one data set, and what the rest of the code needs.

    In-memory data sets (digits, CIFAR) keep uint8 NHWC arrays; folder data sets (ImageNet) keep
    file paths and decode them on the fly. Treat the arrays as read-only.

    Attributes:
        name: data set name, one of `DATASETS`.
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
        _check_int("batch_size", self.batch_size, 1)
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


# ------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")


def _subkey(key: tf.Tensor) -> tf.Tensor:
    """A second stateless key derived from `key`, for an independent random decision."""
    return tf.random.experimental.stateless_split(key, num=1)[0]


def _pad_crop_transform(pad: int, flip: bool) -> TrainTransform:
    """Zero-pad `pad` pixels on every side, random crop back to size, optional horizontal flip."""

    def transform(image, key):
        height, width, channels = image.shape
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, [height, width, channels], seed=key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=_subkey(key))
        return image

    return transform


def _identity(image):
    return image


def _check_labels(labels, num_classes: int, source: str) -> np.ndarray:
    """1-D integer labels in [0, num_classes), as int32; else a CorruptDataError naming `source`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(
            f"Labels in {source} must be a 1-D integer array. Received: shape {labels.shape}, "
            f"dtype {labels.dtype}"
        )
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise CorruptDataError(
            f"Labels in {source} must be in [0, {num_classes}). Received: {bad.size} "
            f"out-of-range labels, e.g. {sorted(set(bad.tolist()))[:10]}"
        )
    return labels.astype(np.int32)


def _holdout(x, y, size: int, split_seed: int):
    """Hold `size` training samples out for validation (fixed by `split_seed`), keeping order."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 0 <= size < len(y):
        raise ValueError(
            f"`validation_size` must be an int in [0, {len(y)}) for {len(y)} training images. "
            f"Received: validation_size={size}"
        )
    order = np.random.default_rng(split_seed).permutation(len(y))
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return x[train], y[train], x[val], y[val]


# ------------------------------------------------------------------------------------------
# Digits (bundled with scikit-learn)
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (values 0..16) -> read-only uint8 RGB at size x size, labels.

    Bilinear upscaling (OpenCV ``INTER_LINEAR``, pixel centres aligned) of the [0, 1]-scaled
    images, rounded to uint8 and repeated to 3 channels.
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
    _check_int("batch_size", batch_size, 1)
    _check_int("image_size", image_size, 8)
    images, labels = _digits_images(int(image_size))
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
        train_transform=_pad_crop_transform(max(1, int(image_size) // 16), flip=False),
        eval_transform=_identity,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source="sklearn.datasets.load_digits",
    )


# ------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python archives, extracted folders, Keras' cache, prepared TFDS
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _CifarFormat:
    archive: str  # the official archive's file name
    folder: str  # the folder inside it (and Keras 2's cache name)
    train: tuple[str, ...]  # pickled members of the training set
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    meta: str  # member holding the class names
    names_key: bytes


_CIFAR = {
    "cifar10": _CifarFormat(
        "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10,
        "batches.meta", b"label_names",
    ),
    "cifar100": _CifarFormat(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
        "meta", b"fine_label_names",
    ),
}  # fmt: skip
_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _keras_dataset_dirs() -> list[str]:
    """Keras' dataset caches: ``$KERAS_HOME/datasets``, ``~/.keras/datasets`` (``/tmp/.keras``
    when the home folder is not writable, as Keras itself does)."""
    homes = []
    if os.environ.get("KERAS_HOME"):
        homes.append(os.path.expanduser(os.environ["KERAS_HOME"]))
    home = os.path.expanduser("~")
    homes.append(os.path.join(home, ".keras"))
    if not os.access(home, os.W_OK):
        homes.append(os.path.join("/tmp", ".keras"))
    return [os.path.join(h, "datasets") for h in dict.fromkeys(homes)]


def _tfds_dirs(data_dir: str | None) -> list[str]:
    """TensorFlow Datasets roots: `data_dir`, ``$TFDS_DATA_DIR``, ``~/tensorflow_datasets``."""
    roots = [data_dir] if data_dir else []
    if os.environ.get("TFDS_DATA_DIR"):
        roots.append(os.environ["TFDS_DATA_DIR"])
    roots.append(os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))
    return list(dict.fromkeys(os.path.expanduser(r) for r in roots))


def _cifar_file_candidates(fmt: _CifarFormat, data_dir: str | None) -> list[str]:
    """Archive or extracted-folder paths, in the order they are tried."""
    paths = []
    if data_dir:
        data_dir = os.path.expanduser(data_dir)
        paths += [data_dir, os.path.join(data_dir, fmt.folder), os.path.join(data_dir, fmt.archive)]
    for cache in _keras_dataset_dirs():
        paths += [
            os.path.join(cache, fmt.folder),  # Keras 2: extracted folder
            os.path.join(cache, fmt.folder + ".tar.gz"),  # Keras 2: archive
            os.path.join(cache, fmt.folder + "-target", fmt.folder),  # Keras 3: extracted
            os.path.join(cache, fmt.folder + "-target_archive"),  # Keras 3: archive
            os.path.join(cache, fmt.archive),  # the official archive, put there by hand
        ]
    return list(dict.fromkeys(paths))


def _is_cifar_source(path: str, fmt: _CifarFormat, data_dir: str | None) -> bool:
    if os.path.isfile(path):
        return True
    if not os.path.isdir(path):
        return False
    # `data_dir` itself counts only when it is the extracted folder (it is usually the parent).
    is_data_dir = data_dir is not None and path == os.path.expanduser(data_dir)
    return not is_data_dir or os.path.isfile(os.path.join(path, fmt.train[0]))


def _unpickle(blob: bytes, source: str) -> dict:
    try:
        content = pickle.loads(blob, encoding="bytes")
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CorruptDataError(
            f"Cannot unpickle {source} (truncated or not a CIFAR batch?). Received: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(content, dict):
        raise CorruptDataError(
            f"{source} must hold a pickled dict. Received: {type(content).__name__}"
        )
    return content


def _read_cifar_folder(path: str, members: Sequence[str]) -> dict[str, dict]:
    found = {}
    for member in members:
        file = os.path.join(path, member)
        if os.path.isfile(file):
            with open(file, "rb") as f:
                found[member] = _unpickle(f.read(), file)
    return found


def _read_cifar_archive(path: str, members: Sequence[str]) -> dict[str, dict]:
    """Read the wanted members in one pass over the (compressed) tar, without extracting."""
    wanted, found = set(members), {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                name = posixpath.basename(info.name)
                if info.isfile() and name in wanted and name not in found:
                    found[name] = _unpickle(tar.extractfile(info).read(), f"{path}:{info.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CorruptDataError(
            f"Cannot read {path} as a CIFAR archive (truncated download, or not a tar.gz?); "
            f"replace it with a fresh copy from {_CIFAR_PAGE}. Received: "
            f"{type(error).__name__}: {error}"
        ) from error
    return found


def _cifar_arrays(batches: list[tuple[str, dict]], label_key: bytes, num_classes: int):
    """Pickled CIFAR batches -> (uint8 NHWC images, int32 labels), validated."""
    images, labels = [], []
    for source, batch in batches:
        for key in (b"data", label_key):
            if key not in batch:
                raise CorruptDataError(
                    f"{source} lacks the entry {key!r}. Received: keys {sorted(batch)[:10]}"
                )
        data, y = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise CorruptDataError(
                f"{source} must hold an (N, 3072) uint8 b'data' array. Received: shape "
                f"{data.shape}, dtype {data.dtype}"
            )
        if y.shape != (len(data),):
            raise CorruptDataError(
                f"{source} must hold one label per image ({len(data)}). Received: labels of "
                f"shape {y.shape}"
            )
        # Channel-major rows: 1,024 red, 1,024 green, 1,024 blue values.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_check_labels(y, num_classes, source))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _load_cifar_files(path: str, fmt: _CifarFormat):
    """(train_x, train_y, test_x, test_y, class names) from an archive or extracted folder."""
    members = (*fmt.train, *fmt.test, fmt.meta)
    if os.path.isdir(path):
        found, where = _read_cifar_folder(path, members), lambda m: os.path.join(path, m)
    else:
        found, where = _read_cifar_archive(path, members), lambda m: f"{path}:{fmt.folder}/{m}"
    missing = [m for m in (*fmt.train, *fmt.test) if m not in found]
    if missing:
        raise CorruptDataError(
            f"{path} is incomplete: it lacks {', '.join(missing)}. Replace it with a fresh copy "
            f"of {fmt.archive} from {_CIFAR_PAGE}. Received: {sorted(found)}"
        )
    train_x, train_y = _cifar_arrays(
        [(where(m), found[m]) for m in fmt.train], fmt.label_key, fmt.num_classes
    )
    test_x, test_y = _cifar_arrays(
        [(where(m), found[m]) for m in fmt.test], fmt.label_key, fmt.num_classes
    )
    names = found.get(fmt.meta, {}).get(fmt.names_key)
    if names is None or len(names) != fmt.num_classes:
        names = CIFAR10_CLASSES if fmt.num_classes == 10 else [str(i) for i in range(100)]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return train_x, train_y, test_x, test_y, names


def _tfds_prepared(root: str, name: str) -> bool:
    """A prepared TFDS copy: ``root/name/<version>/dataset_info.json`` (checked without TFDS,
    so nothing is imported, and nothing can be fetched, unless the data are there)."""
    return bool(glob.glob(os.path.join(root, name, "*", "dataset_info.json")))


def _load_cifar_tfds(root: str, name: str, fmt: _CifarFormat):
    """(train_x, train_y, test_x, test_y, class names) from a prepared TFDS copy in `root`."""
    import tensorflow_datasets as tfds

    source = os.path.join(root, name)
    try:
        builder = tfds.builder(name, data_dir=root)
        arrays = [
            tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
            for split in ("train", "test")
        ]
        names = list(builder.info.features["label"].names)
    except Exception as error:  # noqa: BLE001 - TFDS raises many types; name the folder
        raise CorruptDataError(
            f"Cannot read the TensorFlow Datasets copy of {name} in {source}. Received: "
            f"{type(error).__name__}: {error}"
        ) from error
    out = []
    for split, (images, labels) in zip(("train", "test"), arrays):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
            raise CorruptDataError(
                f"{source} ({split}) must hold uint8 32x32x3 images. Received: shape "
                f"{images.shape}, dtype {images.dtype}"
            )
        out += [images, _check_labels(labels, fmt.num_classes, f"{source} ({split})")]
    if len(names) != fmt.num_classes:
        names = CIFAR10_CLASSES if fmt.num_classes == 10 else [str(i) for i in range(100)]
    return (*out, [str(n) for n in names])


def _cifar_not_found(name: str, fmt: _CifarFormat, data_dir, tried: list[str]):
    where = f"at {data_dir}" if data_dir else "in a folder"
    return DataNotFoundError(
        f"{name} was not found (nothing is downloaded). Tried:\n  "
        + "\n  ".join(tried)
        + f"\nPut {fmt.archive} (the 'python version' from {_CIFAR_PAGE}), or the folder "
        f"{fmt.folder}/ extracted from it, {where} and pass that folder as data_dir "
        "(--config.data.data_dir for scripts/train.py, --data_dir for scripts/visualize.py)."
    )


def _find_and_read_cifar(name: str, fmt: _CifarFormat, data_dir: str | None):
    tried = []
    for path in _cifar_file_candidates(fmt, data_dir):
        if _is_cifar_source(path, fmt, data_dir):
            return (*_load_cifar_files(path, fmt), path)
        tried.append(path)
    for root in _tfds_dirs(data_dir):
        source = os.path.join(root, name)
        if _tfds_prepared(root, name):
            try:
                import tensorflow_datasets  # noqa: F401
            except ImportError:
                tried.append(
                    f"{source} (prepared TFDS copy, but tensorflow_datasets is not installed)"
                )
                continue
            return (*_load_cifar_tfds(root, name, fmt), source)
        tried.append(f"{source} (TensorFlow Datasets, if prepared)")
    raise _cifar_not_found(name, fmt, data_dir, tried)


def load_cifar(
    name="cifar10",
    data_dir=None,
    batch_size=64,
    validation_size=5000,
    seed=0,
    augment=True,
    drop_remainder=True,
    split_seed=0,
) -> Splits:
    """CIFAR-10 or CIFAR-100 with the reference's recipe, from files already on this machine.

    Looked for, in this order (the first hit is read; nothing is downloaded):
    1. `data_dir` itself when it is the archive or the extracted folder;
    2. ``data_dir/cifar-10-python.tar.gz`` or ``data_dir/cifar-10-batches-py/`` (CIFAR-100:
       ``cifar-100-python.tar.gz``, ``cifar-100-python/``);
    3. Keras' cache (``$KERAS_HOME`` or ``~/.keras``, ``datasets/``) under the names Keras 2
       (``cifar-10-batches-py/``, ``cifar-10-batches-py.tar.gz``) and Keras 3
       (``cifar-10-batches-py-target/cifar-10-batches-py/``, ``cifar-10-batches-py-target_archive``)
       give it, or the official archive name;
    4. a prepared TensorFlow Datasets copy (`data_dir`, ``$TFDS_DATA_DIR``,
       ``~/tensorflow_datasets``), read only when ``tensorflow_datasets`` is installed (it orders
       the training images differently, so its hold-out is a different set of images).
    Archives are read in one pass without extracting. The pickled batches hold ``b'data'``
    (N x 3072 uint8, channel-major) and ``b'labels'`` (CIFAR-100: ``b'fine_labels'``).

    Augmentation: zero-pad 4, random 32x32 crop, random horizontal flip. Normalisation: the data
    set's mean and std (`CIFAR_STATS`). `validation_size` training images are held out.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: a folder holding the archive or extracted folder (or either of those itself).
        batch_size: batch size of the returned datasets.
        validation_size: training images held out for validation (5,000 in the reference; 0 to
            train on all 50,000 with an empty validation split).
        seed: seed of the training order and augmentation.
        augment: augment the training split.
        drop_remainder: drop the last partial training batch.
        split_seed: seed of the hold-out (independent of `seed`).

    Returns:
        The `Splits`; `source` names the archive, folder or TFDS copy read.

    Raises:
        DataNotFoundError: no copy anywhere; the message lists every path tried and what to put
            there.
        CorruptDataError: an unreadable or truncated archive, a bad pickle, wrong array shapes or
            out-of-range labels; the message names the file.
        ValueError: an unknown `name` or a bad `validation_size`.

    Example:
        >>> splits = load_cifar("cifar10", data_dir="/data/cifar")  # doctest: +SKIP
        >>> splits.sizes  # doctest: +SKIP
        {'train': 45000, 'validation': 5000, 'test': 10000}
    """
    if name not in _CIFAR:
        raise ValueError(
            f"Unknown CIFAR data set. Expected cifar10 or cifar100. Received: {name!r}"
        )
    _check_int("batch_size", batch_size, 1)
    fmt = _CIFAR[name]
    train_x, train_y, test_x, test_y, names, source = _find_and_read_cifar(name, fmt, data_dir)
    train_x, train_y, val_x, val_y = _holdout(train_x, train_y, validation_size, split_seed)
    return Splits(
        name=name,
        num_classes=fmt.num_classes,
        class_names=list(names),
        image_size=(32, 32),
        mean=CIFAR_STATS[name][0],
        std=CIFAR_STATS[name][1],
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=test_x,
        test_y=test_y,
        train_transform=_pad_crop_transform(4, flip=True),
        eval_transform=_identity,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source=source,
    )


# ------------------------------------------------------------------------------------------
# ImageNet-style class folders
# ------------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")


def _imagenet_layout_hint(data_dir: str) -> str:
    return (
        f"Put the training images as {data_dir}/train/<wnid>/*.JPEG and the validation images, "
        f"sorted into the same class folders, as {data_dir}/val/<wnid>/*.JPEG, and pass {data_dir} "
        "as data_dir. Nothing is downloaded."
    )


def _list_class_folders(data_dir: str, split: str, classes: list[str] | None):
    """(paths, labels, classes) of ``data_dir/split/<class>/<image>``; sorted, so deterministic.

    With `classes` given (the training classes), the split's folders must be among them; a class
    may have no folder.
    """
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataNotFoundError(f"ImageNet: no folder {root}. {_imagenet_layout_hint(data_dir)}")
    present = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if classes is None:
        classes = present
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise CorruptDataError(
            f"{root} has class folders that {os.path.join(data_dir, 'train')} lacks, so they "
            f"have no label. Received: {unknown[:10]}"
        )
    paths, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXTENSIONS))
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise DataNotFoundError(
            f"ImageNet: {root} holds no images ({', '.join(_IMAGE_EXTENSIONS)}) in class "
            f"folders. {_imagenet_layout_hint(data_dir)}"
        )
    return np.array(paths), np.array(labels, np.int32), classes


def _decode(path):
    # decode_image reads JPEG, PNG, BMP and GIF by content (ImageNet has PNGs named .JPEG).
    image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _random_resized_crop_transform(size: int) -> TrainTransform:
    """Random crop of 8%-100% of the area, aspect ratio 3/4-4/3, resized to size x size, and a
    random horizontal flip (the reference's RandomResizedCrop; after 10 failed attempts the
    whole image is used)."""

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


def _resize_centre_crop_transform(size: int, resize: int) -> EvalTransform:
    """Resize the shorter side to `resize`, then the central size x size crop."""

    def transform(path):
        image = _decode(path)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        new = tf.cast(tf.round(shape * (resize / tf.reduce_min(shape))), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        return _to_uint8(image[top : top + size, left : left + size])

    return transform


def load_imagenet_folders(
    data_dir,
    batch_size=256,
    validation_size=50000,
    seed=0,
    augment=True,
    image_size=224,
    drop_remainder=True,
    split_seed=0,
) -> Splits:
    """ImageNet-style class folders ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*``.

    Class ids follow the sorted training folder names (the wnids). Training: random resized crop
    (area 8-100%, aspect 3/4-4/3) to `image_size` and a horizontal flip; evaluation (held-out
    training images and ``val/``, the test split): resize the shorter side to
    ``round(image_size * 256 / 224)`` (256), central `image_size` crop; ImageNet mean and std.
    Images are decoded on the fly (``tf.io.read_file`` + ``decode_image``) in parallel and
    prefetched; a corrupt image file fails the iteration with TensorFlow's decode error.

    Args:
        data_dir: the folder holding ``train/`` and ``val/``.
        batch_size: batch size of the returned datasets.
        validation_size: training images held out for validation (50,000 in the reference).
        seed: seed of the training order and augmentation.
        augment: augment the training split.
        image_size: side of the square model input (224).
        drop_remainder: drop the last partial training batch.
        split_seed: seed of the hold-out (independent of `seed`).

    Returns:
        The `Splits`; its ``*_x`` arrays hold file paths.

    Raises:
        DataNotFoundError: no `data_dir`, no ``train/`` or ``val/`` folder, or no images.
        CorruptDataError: ``val/`` has class folders that ``train/`` lacks.
        ValueError: a bad `validation_size` or `image_size`.

    Example:
        >>> splits = load_imagenet_folders("/data/imagenet")  # doctest: +SKIP
        >>> splits.sizes  # doctest: +SKIP
        {'train': 1231167, 'validation': 50000, 'test': 50000}
    """
    if not data_dir:
        raise DataNotFoundError(
            "ImageNet needs data_dir (--config.data.data_dir), the folder holding train/ and "
            f"val/. {_imagenet_layout_hint('<data_dir>')}"
        )
    _check_int("batch_size", batch_size, 1)
    _check_int("image_size", image_size, 8)
    data_dir = os.path.expanduser(data_dir)
    train_x, train_y, classes = _list_class_folders(data_dir, "train", None)
    test_x, test_y, _ = _list_class_folders(data_dir, "val", classes)
    train_x, train_y, val_x, val_y = _holdout(train_x, train_y, validation_size, split_seed)
    size = int(image_size)
    return Splits(
        name="imagenet",
        num_classes=len(classes),
        class_names=classes,
        image_size=(size, size),
        mean=IMAGENET_STATS[0],
        std=IMAGENET_STATS[1],
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=test_x,
        test_y=test_y,
        train_transform=_random_resized_crop_transform(size),
        eval_transform=_resize_centre_crop_transform(size, round(size * 256 / 224)),
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source=data_dir,
    )


# ------------------------------------------------------------------------------------------
# One entry point
# ------------------------------------------------------------------------------------------


def load_dataset(
    name,
    data_dir=None,
    batch_size=64,
    validation_size=None,
    seed=0,
    augment=True,
    image_size=None,
    drop_remainder=True,
    split_seed=0,
) -> Splits:
    """Load a data set by name: ``digits`` (bundled), ``cifar10``, ``cifar100``, ``imagenet``.

    Args:
        name: one of `DATASETS`.
        data_dir: where the CIFAR archives or ImageNet folders are (unused for digits).
        batch_size: batch size of the returned datasets.
        validation_size: training images held out for validation; None or negative for the
            data set's default (CIFAR 5,000, ImageNet 50,000). Digits has a fixed split and
            accepts only the default.
        seed: seed of the training order and augmentation.
        augment: augment the training split.
        image_size: digits and ImageNet: side of the model input (default 32 / 224); CIFAR: None
            or 32.
        drop_remainder: drop the last partial training batch (evaluation never drops any).
        split_seed: CIFAR and ImageNet: seed of the hold-out, independent of `seed`.

    Returns:
        The `Splits` of the data set.

    Raises:
        DataNotFoundError: the data are not on this machine (the message says where to put them).
        CorruptDataError: the data files are damaged (the message names the file).
        ValueError: an unknown name or an argument the data set does not take.

    Example:
        >>> splits = load_dataset("digits", batch_size=32, seed=1)
        >>> splits.num_classes, splits.class_names[:3], splits.steps_per_epoch
        (10, ['0', '1', '2'], 33)
    """
    default_holdout = validation_size is None or validation_size < 0
    if name == "digits":
        if not default_holdout:
            raise ValueError(
                "The digits split is fixed (1,078 / 269 / 450); leave validation_size unset. "
                f"Received: validation_size={validation_size}"
            )
        return load_digits(batch_size, seed, augment, image_size or 32, drop_remainder)
    holdout = DEFAULT_VALIDATION_SIZE.get(name) if default_holdout else validation_size
    if name in _CIFAR:
        if image_size not in (None, 32):
            raise ValueError(f"CIFAR images are 32x32. Received: image_size={image_size}")
        return load_cifar(
            name, data_dir, batch_size, holdout, seed, augment, drop_remainder, split_seed
        )
    if name == "imagenet":
        return load_imagenet_folders(
            data_dir,
            batch_size,
            holdout,
            seed,
            augment,
            image_size or 224,
            drop_remainder,
            split_seed,
        )
    raise ValueError(f"Unknown data set. Expected one of {', '.join(DATASETS)}. Received: {name!r}")
