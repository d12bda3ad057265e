"""Input pipelines (tf.data) for MSD-Net: the bundled digits, CIFAR-10/100 and ImageNet folders.

Nothing is ever downloaded. Every loader returns a `Splits`: train / validation / test
`tf.data.Dataset`s of ``(float32 NHWC normalised images, int32 labels)`` plus what the rest of the
code needs (class names, mean and std, split sizes, the raw uint8 test images).

Data sets (`load_dataset` by name):
- ``digits`` (the default, `msdnet_tf.data.digits`): scikit-learn's bundled 1,797 real 8x8
  handwritten digits, upscaled to 32x32 RGB, with a fixed stratified 1,078 / 269 / 450 split.
- ``cifar10`` / ``cifar100`` (`msdnet_tf.data.cifar`): the python archives
  (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) or their extracted folders, looked for
  in `data_dir`, then in Keras' dataset cache, then in a prepared TensorFlow Datasets copy.
- ``imagenet`` (`msdnet_tf.data.imagenet`): class folders ``data_dir/train/<wnid>/*.JPEG`` and
  ``data_dir/val/<wnid>/*.JPEG``.

`msdnet_tf.data.splits` describes the hold-out, determinism and resumption;
`msdnet_tf.data.transforms` the augmentations.
"""

from msdnet_tf.data.cifar import CIFAR10_CLASSES, CIFAR_STATS, load_cifar
from msdnet_tf.data.digits import DIGITS_FRACTIONS, DIGITS_STATS, digits_split_indices, load_digits
from msdnet_tf.data.imagenet import IMAGENET_STATS, load_imagenet_folders
from msdnet_tf.data.registry import DATASETS, DEFAULT_VALIDATION_SIZE, load_dataset
from msdnet_tf.data.splits import CorruptDataError, DataNotFoundError, Splits

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_STATS",
    "DATASETS",
    "DEFAULT_VALIDATION_SIZE",
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
