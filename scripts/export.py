"""msdnet-export from a source checkout: see `msdnet_tf.cli.export`.

python scripts/export.py --workdir runs/digits_demo --p 5 --tflite
python scripts/export.py --model x.keras --thresholds 0.9,0.8 --out /srv/models/x
"""

from msdnet_tf.cli.export import main

if __name__ == "__main__":
    main()
