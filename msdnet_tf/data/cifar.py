"""CIFAR-10 / CIFAR-100 from files already on this machine: python archives, extracted folders,
Keras' dataset cache, or a prepared TensorFlow Datasets copy (see `load_cifar`).

Nothing is downloaded. The reference's recipe: zero-pad 4 + random 32x32 crop + horizontal flip
for training, the data set's mean and std (`CIFAR_STATS`), 5,000 training images held out.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pickle
import posixpath
import tarfile
import zlib
from collections.abc import Sequence

import numpy as np

from msdnet_tf.common import check_int
from msdnet_tf.data.splits import CorruptDataError, DataNotFoundError, Splits, holdout
from msdnet_tf.data.transforms import identity, pad_crop_transform

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_FORMATS",
    "CIFAR_STATS",
    "CifarFormat",
    "load_cifar",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]  # fmt: skip
# Per-channel (mean, std) of pixels scaled to [0, 1], as the reference normalises.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """Where the python version of a CIFAR archive keeps what (file and pickle key names)."""

    archive: str  # the official archive's file name
    folder: str  # the folder inside it (and Keras 2's cache name)
    train: tuple[str, ...]  # pickled members of the training set
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    meta: str  # member holding the class names
    names_key: bytes


CIFAR_FORMATS = {
    "cifar10": CifarFormat(
        "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10,
        "batches.meta", b"label_names",
    ),
    "cifar100": CifarFormat(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
        "meta", b"fine_label_names",
    ),
}  # fmt: skip
_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


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


def _cifar_file_candidates(fmt: CifarFormat, data_dir: str | None) -> list[str]:
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


def _is_cifar_source(path: str, fmt: CifarFormat, data_dir: str | None) -> bool:
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


def _load_cifar_files(path: str, fmt: CifarFormat):
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


def _load_cifar_tfds(root: str, name: str, fmt: CifarFormat):
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


def _cifar_not_found(name: str, fmt: CifarFormat, data_dir, tried: list[str]):
    where = f"at {data_dir}" if data_dir else "in a folder"
    return DataNotFoundError(
        f"{name} was not found (nothing is downloaded). Tried:\n  "
        + "\n  ".join(tried)
        + f"\nPut {fmt.archive} (the 'python version' from {_CIFAR_PAGE}), or the folder "
        f"{fmt.folder}/ extracted from it, {where} and pass that folder as data_dir "
        "(--config.data.data_dir for scripts/train.py, --data_dir for scripts/visualize.py)."
    )


def _find_and_read_cifar(name: str, fmt: CifarFormat, data_dir: str | None):
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
    if name not in CIFAR_FORMATS:
        raise ValueError(
            f"Unknown CIFAR data set. Expected cifar10 or cifar100. Received: {name!r}"
        )
    check_int(batch_size, "batch_size", minimum=1)
    fmt = CIFAR_FORMATS[name]
    train_x, train_y, test_x, test_y, names, source = _find_and_read_cifar(name, fmt, data_dir)
    train_x, train_y, val_x, val_y = holdout(train_x, train_y, validation_size, split_seed)
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
        train_transform=pad_crop_transform(4, flip=True),
        eval_transform=identity,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source=source,
    )
