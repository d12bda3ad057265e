"""msdnet-visualize from a source checkout: see `msdnet_tf.cli.visualize`.

python scripts/visualize.py --model runs/digits_demo --layer features
python scripts/visualize.py --model runs/digits --checkpoint best.keras --classes 3,8
"""

from msdnet_tf.cli.visualize import main

if __name__ == "__main__":
    main()
