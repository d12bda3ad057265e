"""ImageNet-style class folders: ``data_dir/train/<wnid>/*.JPEG`` and ``data_dir/val/<wnid>/*``.

Images are decoded per epoch (nothing is held in memory); the reference's recipe: random resized
crop 224 + flip for training, resize 256 + centre crop 224 for evaluation, ImageNet's mean and std
(`IMAGENET_STATS`), 50,000 training images held out.
"""

from __future__ import annotations

import os

import numpy as np

from msdnet_tf.common import check_int
from msdnet_tf.data.splits import CorruptDataError, DataNotFoundError, Splits, holdout
from msdnet_tf.data.transforms import random_resized_crop_transform, resize_centre_crop_transform

__all__ = ["IMAGENET_STATS", "load_imagenet_folders"]

# Per-channel (mean, std) of pixels scaled to [0, 1], as the reference normalises.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

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
    check_int(batch_size, "batch_size", minimum=1)
    check_int(image_size, "image_size", minimum=8)
    data_dir = os.path.expanduser(data_dir)
    train_x, train_y, classes = _list_class_folders(data_dir, "train", None)
    test_x, test_y, _ = _list_class_folders(data_dir, "val", classes)
    train_x, train_y, val_x, val_y = holdout(train_x, train_y, validation_size, split_seed)
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
        train_transform=random_resized_crop_transform(size),
        eval_transform=resize_centre_crop_transform(size, round(size * 256 / 224)),
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        source=data_dir,
    )
