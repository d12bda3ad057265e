"""Data sets as `Splits`: the bundled digits, CIFAR archives, ImageNet-style folders."""

from msdnet_tf.data.loaders import *  # noqa: F403
from msdnet_tf.data.loaders import __all__  # noqa: F401
