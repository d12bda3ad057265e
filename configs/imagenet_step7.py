"""ImageNet, MSD-Net step 7 (5 exits, 90 epochs, batch 256, lr /10 every 30 epochs).

    python scripts/train.py --config configs/imagenet_step7.py --workdir runs/in7 \
        --config.data.data_dir /data/imagenet --config.train.strategy mirrored

expects class folders `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` in /data/imagenet. To evaluate
the released reference checkpoint instead, convert it with scripts/convert_checkpoint.py.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("imagenet_step7", "imagenet", epochs=90, batch_size=256)
    config.data.validation_size = 50000
    config.train.schedule = "step30"
    if arg == "smoke":
        config.train.epochs = 1
        config.train.steps_per_epoch = 1
    config.lock()
    return config
