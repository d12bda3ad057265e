"""msdnet-convert from a source checkout: see `msdnet_tf.cli.convert`.

    python scripts/convert_checkpoint.py --checkpoint msdnet-step=4-block=5.pth.tar \
        --config imagenet_step4 --out runs/imagenet_step4.keras
"""

from msdnet_tf.cli.convert import main

if __name__ == "__main__":
    main()
