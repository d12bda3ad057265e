"""CIFAR-100, anytime prediction: the 7-exit MSD-Net of the reference (300 epochs, batch 64).

    python scripts/train.py --config configs/cifar100_anytime.py --workdir runs/c100 \
        --config.data.data_dir /data/cifar

expects `cifar-100-python.tar.gz` (or its extracted folder) in /data/cifar and ends with about
74-75% top-1 at the last exit. `--config configs/cifar100_anytime.py:smoke` runs two short epochs
for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("cifar100_anytime", "cifar100", epochs=300, batch_size=64)
    if arg == "smoke":
        config.train.epochs = 2
        config.train.steps_per_epoch = 2
    config.lock()
    return config
