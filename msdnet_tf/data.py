"""Input pipelines (tf.data) for MSD-Net: the bundled digits, CIFAR-10/100 and ImageNet folders.

Nothing is ever downloaded. CIFAR is read from the standard python archives at a path the user
gives (or from Keras' dataset cache when it already holds them); ImageNet from class folders.
The default data set, `digits`, is scikit-learn's bundled 1,797 handwritten 8x8 digits, upscaled
to 32x32 RGB, so the main job runs offline.

Determinism: the order and the augmentation of training epoch e depend only on (seed, e) through
stateless random ops, so a run resumed at epoch e sees exactly the batches an uninterrupted run
would have seen (`Splits.train_dataset(start_epoch)`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tarfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "CIFAR10_CLASSES",
    "CorruptDataError",
    "DataNotFoundError",
    "Splits",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_imagenet_folders",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]  # fmt: skip
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Digits: mean/std of the training split at 32x32 (checked by tests/test_data.py).
DIGITS_STATS = ((0.3063, 0.3063, 0.3063), (0.3242, 0.3242, 0.3242))
DIGITS_SPLIT_SEED = 20180430  # fixed: the digits split never depends on the run's seed
DIGITS_FRACTIONS = (0.60, 0.15, 0.25)  # train, validation, test (stratified)


class DataNotFoundError(FileNotFoundError):
    """The data set is not where it was looked for; the message says where to put it."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read, or holds wrong shapes or labels."""


# ------------------------------------------------------------------------------------------
# The splits object
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Splits:
    """Train / validation / test splits and what the rest of the code needs to know about them.

    In-memory data sets (digits, CIFAR) keep uint8 NHWC arrays; folder data sets (ImageNet) keep
    file paths and decode on the fly.

    Attributes:
        name: data set name.
        num_classes: number of classes.
        class_names: one name per class id.
        image_size: (height, width) of the model input.
        mean, std: per-channel normalisation, ``x = (pixel / 255 - mean) / std``.
        batch_size: batch size of every dataset returned.
        seed: seed of the training order and augmentation.
        train_x, train_y, val_x, val_y, test_x, test_y: arrays (uint8 images or file paths).
    """

    name: str
    num_classes: int
    class_names: list[str]
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int
    seed: int
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    augment: bool = True
    _train_map: Callable | None = None
    _eval_map: Callable | None = None

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "validation": len(self.val_y), "test": len(self.test_y)}

    @property
    def steps_per_epoch(self) -> int:
        """Full training batches per epoch (the last partial batch is dropped)."""
        return max(1, len(self.train_y) // self.batch_size)

    def normalize(self, images_uint8) -> np.ndarray:
        """uint8 NHWC images -> the model's float32 input."""
        x = np.asarray(images_uint8, np.float32) / 255.0
        return ((x - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

    def denormalize(self, images) -> np.ndarray:
        """The model's input -> float32 RGB in [0, 1], for display."""
        x = np.asarray(images, np.float32) * np.float32(self.std) + np.float32(self.mean)
        return np.clip(x, 0.0, 1.0)

    def train_for_epoch(self, epoch: int) -> tf.data.Dataset:
        """Epoch `epoch`'s shuffled, augmented batches; a function of (seed, epoch) only."""
        n = len(self.train_y)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=[self.seed, epoch]
        )
        xs, ys = tf.constant(self.train_x), tf.constant(self.train_y.astype(np.int32))
        transform = self._train_map if self.augment else self._eval_map
        seed, normalize = self.seed, self._normalizer()

        def load(index):
            image = tf.gather(xs, index)
            key = tf.stack([tf.cast(seed, tf.int64) * 1000003 + epoch, index])
            return normalize(transform(image, key)), tf.gather(ys, index)

        return (
            tf.data.Dataset.from_tensor_slices(order)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(self.batch_size, drop_remainder=True)
        )

    def train_dataset(self, start_epoch: int = 0, epochs: int | None = None) -> tf.data.Dataset:
        """Epochs `start_epoch`, `start_epoch + 1`, ... concatenated, for `model.fit` with
        ``steps_per_epoch=self.steps_per_epoch`` and ``initial_epoch=start_epoch``."""
        last = start_epoch + epochs if epochs is not None else start_epoch + 100000
        return (
            tf.data.Dataset.range(start_epoch, last)
            .flat_map(self.train_for_epoch)
            .prefetch(tf.data.AUTOTUNE)
        )

    def _eval(self, xs, ys) -> tf.data.Dataset:
        normalize, transform = self._normalizer(), self._eval_map
        ds = tf.data.Dataset.from_tensor_slices((xs, ys.astype(np.int32)))
        ds = ds.map(lambda x, y: (normalize(transform(x, None)), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # fmt: skip
        return ds.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def validation_dataset(self) -> tf.data.Dataset:
        return self._eval(self.val_x, self.val_y)

    def test_dataset(self) -> tf.data.Dataset:
        return self._eval(self.test_x, self.test_y)

    def test_images(self) -> np.ndarray:
        """The test split as uint8 NHWC images at the model's input size (for pictures)."""
        if self.test_x.dtype == np.uint8:
            return self.test_x
        return np.stack(
            [self._eval_map(tf.constant(p), None).numpy().astype(np.uint8) for p in self.test_x]
        )

    def _normalizer(self):
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return lambda image: (tf.cast(image, tf.float32) / 255.0 - mean) / std


# ------------------------------------------------------------------------------------------
# Augmentations: (uint8 image, stateless key or None) -> uint8 image at the model size
# ------------------------------------------------------------------------------------------


def _pad_crop(pad: int, flip: bool):
    """Zero-pad `pad` pixels, random crop back to size, optional horizontal flip (reference)."""

    def transform(image, key):
        if key is None:
            return image
        h, w = image.shape[0], image.shape[1]
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, [h, w, image.shape[2]], seed=key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=key + 1)
        return image

    return transform


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(
            f"Labels in {source} must be a 1-D integer array. Received: shape {labels.shape}, "
            f"dtype {labels.dtype}"
        )
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise CorruptDataError(
            f"Labels in {source} must be in [0, {num_classes}). Received: out-of-range labels "
            f"{sorted(set(bad.tolist()))[:10]}"
        )
    return labels.astype(np.int32)


def _holdout(x, y, size: int, seed: int):
    """Split `size` samples (fixed by `seed`) off the training set for validation."""
    if not 0 <= size < len(y):
        raise ValueError(
            f"`validation_size` must be in [0, {len(y)}). Received: validation_size={size}"
        )
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return x[train], y[train], x[val], y[val]


# ------------------------------------------------------------------------------------------
# Digits (bundled with scikit-learn)
# ------------------------------------------------------------------------------------------


def _digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (values 0..16) -> uint8 RGB at size x size (bilinear upscaling)."""
    import cv2
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.clip(bunch.images / 16.0, 0.0, 1.0).astype(np.float32)
    resized = np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images]
    )
    rgb = np.repeat(np.round(np.clip(resized, 0, 1) * 255.0).astype(np.uint8)[..., None], 3, -1)
    return rgb, bunch.target.astype(np.int32)


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split: 60% train, 15% validation, 25% test of every class."""
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    parts = ([], [], [])
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(DIGITS_FRACTIONS[0] * len(members)))
        n_val = int(round(DIGITS_FRACTIONS[1] * len(members)))
        for part, chunk in zip(parts, np.split(members, [n_train, n_train + n_val])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_digits(batch_size=64, seed=0, augment=True, image_size=32) -> Splits:
    """scikit-learn's bundled handwritten digits as a 10-class, 32x32 RGB data set.

    1,797 real 8x8 images (values 0..16) ship inside scikit-learn: no download. They are scaled to
    [0, 1], upscaled with bilinear interpolation to `image_size`, repeated to 3 channels, and split
    once and for all (stratified, fixed seed) into 1,078 train / 269 validation / 450 test images.
    Augmentation: zero-pad 2 + random crop (a translation of up to 2 pixels); no flips, since
    digits are not mirror-symmetric.

    Example:
        >>> splits = load_digits(batch_size=64)
        >>> images, labels = next(iter(splits.train_for_epoch(0)))
        >>> images.shape
        TensorShape([64, 32, 32, 3])
    """
    images, labels = _digits_images(image_size)
    train, val, test = digits_split_indices(labels)
    transform = _pad_crop(max(1, image_size // 16), flip=False)
    return Splits(
        "digits", 10, [str(d) for d in range(10)], (image_size, image_size), *DIGITS_STATS,
        batch_size, seed, images[train], labels[train], images[val], labels[val],
        images[test], labels[test], augment, transform, lambda image, key: image,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python archives)
# ------------------------------------------------------------------------------------------

_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"],
                 b"fine_labels", 100),
}  # fmt: skip


def _cifar_candidates(name: str, data_dir: str | None) -> list[str]:
    archive, folder = _CIFAR_LAYOUT[name][:2]
    roots = [data_dir] if data_dir else []
    roots.append(os.path.join(os.path.expanduser("~"), ".keras", "datasets"))
    paths = []
    for root in roots:
        paths += [os.path.join(root, folder), os.path.join(root, archive)]
    return paths


def _read_pickle(blob: bytes, source: str) -> dict:
    try:
        return pickle.loads(blob, encoding="bytes")
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CorruptDataError(f"Cannot unpickle {source}: {error}") from error


def _cifar_members(path: str, members: list[str], folder: str) -> list[dict]:
    if os.path.isdir(path):
        out = []
        for member in members:
            file = os.path.join(path, member)
            if not os.path.exists(file):
                raise CorruptDataError(f"{path} lacks {member}: is the extracted archive complete?")
            with open(file, "rb") as f:
                out.append(_read_pickle(f.read(), file))
        return out
    try:
        with tarfile.open(path, "r:gz") as tar:
            out = []
            for member in members:
                handle = tar.extractfile(f"{folder}/{member}")
                out.append(_read_pickle(handle.read(), f"{path}:{folder}/{member}"))
            return out
    except (tarfile.TarError, KeyError, EOFError, OSError) as error:
        raise CorruptDataError(f"Cannot read {path} as a CIFAR archive: {error}") from error


def _cifar_arrays(batches: list[dict], label_key: bytes, num_classes: int, source: str):
    try:
        data = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
    except KeyError as error:
        raise CorruptDataError(f"{source} lacks the entry {error}") from error
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise CorruptDataError(
            f"{source} must hold (N, 3072) uint8 images and N labels. Received: data "
            f"{data.shape}, {len(labels)} labels"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), _check_labels(labels, num_classes, source)


def _cifar100_names(path: str, folder: str) -> list[str]:
    try:
        meta = _cifar_members(path, ["meta"], folder)[0]
        return [n.decode() for n in meta[b"fine_label_names"]]
    except (CorruptDataError, KeyError):
        return [str(i) for i in range(100)]


def load_cifar(name="cifar10", data_dir=None, batch_size=64, validation_size=5000, seed=0,
               augment=True) -> Splits:  # fmt: skip
    """CIFAR-10 or CIFAR-100 from the python archives, with the reference's recipe.

    Looks for `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` or the extracted folder
    (`cifar-10-batches-py/`, `cifar-100-python/`) in `data_dir`, then in Keras' cache
    `~/.keras/datasets`. Augmentation: zero-pad 4, random 32x32 crop, horizontal flip;
    normalisation with the data set's mean and std. `validation_size` training images (fixed by
    the split seed 0) are held out for model selection and budgeted-evaluation thresholds.

    Raises:
        DataNotFoundError: listing every path tried and what to put there.
        CorruptDataError: an unreadable archive, wrong shapes or out-of-range labels.
    """
    if name not in _CIFAR_LAYOUT:
        raise ValueError(
            f"Unknown CIFAR data set. Expected cifar10 or cifar100. Received: {name!r}"
        )
    archive, folder, train_members, test_members, label_key, num_classes = _CIFAR_LAYOUT[name]
    candidates = _cifar_candidates(name, data_dir)
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        raise DataNotFoundError(
            f"{name} was not found. Tried: {', '.join(candidates)}. Put {archive} (the 'python "
            f"version' from the CIFAR page) or its extracted folder {folder}/ in a folder and pass "
            "it as --data_dir (or config.data.data_dir). Nothing is downloaded."
        )
    train_x, train_y = _cifar_arrays(
        _cifar_members(path, train_members, folder), label_key, num_classes, path
    )
    test_x, test_y = _cifar_arrays(
        _cifar_members(path, test_members, folder), label_key, num_classes, path
    )
    train_x, train_y, val_x, val_y = _holdout(train_x, train_y, validation_size, 0)
    names = CIFAR10_CLASSES if name == "cifar10" else _cifar100_names(path, folder)
    return Splits(
        name, num_classes, list(names), (32, 32), *CIFAR_STATS[name], batch_size, seed,
        train_x, train_y, val_x, val_y, test_x, test_y, augment,
        _pad_crop(4, flip=True), lambda image, key: image,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# ImageNet-style class folders
# ------------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")


def _list_folder(root: str, classes: list[str] | None):
    if not os.path.isdir(root):
        raise DataNotFoundError(
            f"No folder {root}. Put the images as {root}/<class name>/<image>.JPEG (ImageNet "
            "layout: train/ and val/ side by side) and pass the parent as --data_dir."
        )
    classes = classes or sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DataNotFoundError(f"{root} has no class folders. Expected {root}/<class>/<image>.")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXTENSIONS))
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise DataNotFoundError(f"{root} has class folders but no images ({_IMAGE_EXTENSIONS}).")
    return np.array(paths), np.array(labels, np.int32), classes


def _decode(path):
    image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _imagenet_train_map(size: int):
    def transform(path, key):
        image = _decode(path)
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4]), seed=key, area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10, use_image_if_no_bounding_boxes=True,
        )  # fmt: skip
        image = tf.slice(image, begin, extent)
        image = tf.image.resize(image, [size, size], antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=key + 1)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return transform


def _imagenet_eval_map(size: int, resize: int):
    def transform(path, key):
        del key
        image = _decode(path)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = resize / tf.reduce_min(shape)
        new = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        top = (new[0] - size) // 2
        left = (new[1] - size) // 2
        image = image[top : top + size, left : left + size]
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return transform


def load_imagenet_folders(data_dir, batch_size=256, validation_size=50000, seed=0, augment=True,
                          image_size=224) -> Splits:  # fmt: skip
    """ImageNet-style class folders `data_dir/train/<class>/*` and `data_dir/val/<class>/*`.

    Train: random resized crop (area 8-100%, aspect 3/4-4/3) to 224 and horizontal flip; test
    (`val/`): resize the short side to 256, centre crop 224; ImageNet mean and std.
    `validation_size` training images are held out (50,000 in the reference).
    """
    if not data_dir:
        raise DataNotFoundError("ImageNet needs --data_dir with train/ and val/ class folders.")
    train_x, train_y, classes = _list_folder(os.path.join(data_dir, "train"), None)
    test_x, test_y, _ = _list_folder(os.path.join(data_dir, "val"), classes)
    train_x, train_y, val_x, val_y = _holdout(train_x, train_y, validation_size, 0)
    eval_map = _imagenet_eval_map(image_size, round(image_size * 256 / 224))
    return Splits(
        "imagenet", len(classes), classes, (image_size, image_size), *IMAGENET_STATS, batch_size,
        seed, train_x, train_y, val_x, val_y, test_x, test_y, augment,
        _imagenet_train_map(image_size), eval_map,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# One entry point
# ------------------------------------------------------------------------------------------


def load_dataset(name, data_dir=None, batch_size=64, validation_size=None, seed=0, augment=True,
                 image_size=None) -> Splits:  # fmt: skip
    """Load a data set by name: 'digits' (default, bundled), 'cifar10', 'cifar100', 'imagenet'.

    Args:
        name: data set name.
        data_dir: where CIFAR archives or ImageNet folders are (unused for digits).
        batch_size: batch size of the returned datasets.
        validation_size: training images held out; None or -1 for the data set's default
            (CIFAR 5,000, ImageNet 50,000; digits has its own fixed split).
        seed: seed of the training order and augmentation.
        augment: augment the training split.
        image_size: digits and ImageNet only: the model's input size (default 32 / 224).
    """
    default = validation_size is None or validation_size < 0
    if name == "digits":
        return load_digits(batch_size, seed, augment, image_size or 32)
    if name in _CIFAR_LAYOUT:
        if image_size not in (None, 32):
            raise ValueError(f"CIFAR images are 32x32. Received: image_size={image_size}")
        size = 5000 if default else validation_size
        return load_cifar(name, data_dir, batch_size, size, seed, augment)
    if name == "imagenet":
        size = 50000 if default else validation_size
        return load_imagenet_folders(data_dir, batch_size, size, seed, augment, image_size or 224)
    raise ValueError(
        f"Unknown data set. Expected one of digits, cifar10, cifar100, imagenet. Received: {name!r}"
    )
