"""CIFAR-10 with 10 exits: the Lua README model, the one of the Grad-CAM blog.

    python scripts/train.py --config configs/cifar10_b10.py --workdir runs/c10b10 \
        --config.data.data_dir /data/cifar

expects `cifar-10-python.tar.gz` (or its extracted folder) in /data/cifar and ends with per-exit
accuracies like the blog's Fig. 1 (B1 about 88%, B10 about 94%). `--config
configs/cifar10_b10.py:smoke` runs two short epochs for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("cifar10_b10", "cifar10", epochs=300, batch_size=64)
    if arg == "smoke":
        config.train.epochs = 2
        config.train.steps_per_epoch = 2
    config.lock()
    return config
