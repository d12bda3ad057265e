"""CIFAR-10, anytime prediction: the 7-exit MSD-Net of the reference (300 epochs, batch 64).

    python scripts/train.py --config configs/cifar10_anytime.py --workdir runs/c10 \
        --config.data.data_dir /data/cifar

expects `cifar-10-python.tar.gz` (or its extracted folder) in /data/cifar and ends with about 94%
top-1 at the last exit (paper: 7 exits, 15-76 MFLOPs). `--config configs/cifar10_anytime.py:smoke`
runs two short epochs for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("cifar10_anytime", "cifar10", epochs=300, batch_size=64)
    if arg == "smoke":
        config.train.epochs = 2
        config.train.steps_per_epoch = 2
    config.lock()
    return config
