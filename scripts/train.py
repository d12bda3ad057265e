"""msdnet-train from a source checkout: see `msdnet_tf.cli.train`.

    python scripts/train.py --config digits --workdir runs/digits
    python scripts/train.py --config configs/cifar10_anytime.py --workdir runs/c10 \
        --config.data.data_dir /data/cifar
"""

from msdnet_tf.cli.train import main

if __name__ == "__main__":
    main()
