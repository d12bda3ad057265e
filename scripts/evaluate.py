"""msdnet-evaluate from a source checkout: see `msdnet_tf.cli.evaluate`.

python scripts/evaluate.py --workdir runs/digits
python scripts/evaluate.py --workdir runs/c10 --checkpoint best.keras
"""

from msdnet_tf.cli.evaluate import main

if __name__ == "__main__":
    main()
