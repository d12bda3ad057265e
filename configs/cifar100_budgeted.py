"""CIFAR-100, budgeted batch classification: the 5-exit lin_grow MSD-Net of the reference.

    python scripts/train.py --config configs/cifar100_budgeted.py --workdir runs/c100b \
        --config.data.data_dir /data/cifar

expects `cifar-100-python.tar.gz` (or its extracted folder) in /data/cifar and ends with about 75%
top-1 at the last exit and the budgeted curve of the paper. `--config
configs/cifar100_budgeted.py:smoke` runs two short epochs for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("cifar100_budgeted", "cifar100", epochs=300, batch_size=64)
    if arg == "smoke":
        config.train.epochs = 2
        config.train.steps_per_epoch = 2
    config.lock()
    return config
