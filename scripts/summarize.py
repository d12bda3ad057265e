"""msdnet-summarize from a source checkout: see `msdnet_tf.cli.summarize`.

python scripts/summarize.py --config cifar10_anytime
python scripts/summarize.py --preset imagenet_step7
"""

from msdnet_tf.cli.summarize import main

if __name__ == "__main__":
    main()
