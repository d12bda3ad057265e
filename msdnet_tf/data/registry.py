"""One entry point: `load_dataset` by name, with each data set's default hold-out."""

from __future__ import annotations

from msdnet_tf.data.cifar import CIFAR_FORMATS, load_cifar
from msdnet_tf.data.digits import load_digits
from msdnet_tf.data.imagenet import load_imagenet_folders
from msdnet_tf.data.splits import Splits

__all__ = ["DATASETS", "DEFAULT_VALIDATION_SIZE", "load_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")
DEFAULT_VALIDATION_SIZE = {"cifar10": 5000, "cifar100": 5000, "imagenet": 50000}


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
    if name in CIFAR_FORMATS:
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
